"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import platform
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from headstart.data import load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"  # the shared dev sets (never copied here)


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its finished children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, Python {sys.version.split()[0]}, torch {torch.__version__}"


def train_and_held_out(data):
    """A dataset's training paths and labels, and those of its held-out split (test, else val):
    (dataset, X, y, X_test, y_test)."""
    dataset = load_dataset(data)
    train, held_out = dataset.split("train"), dataset.split(dataset.eval_split)
    return (
        dataset,
        [r.path for r in train],
        np.array([r.label for r in train]),
        [r.path for r in held_out],
        np.array([r.label for r in held_out]),
    )


def per_class_sample(y: np.ndarray, per_class: int | None, seed: int = 0) -> np.ndarray:
    """Indices of up to ``per_class`` seeded random images of every class (all with None), in order."""
    if per_class is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]))


def subsampled(X: list, y: np.ndarray, per_class: int | None) -> tuple[list, np.ndarray]:
    keep = per_class_sample(y, per_class)
    return [X[i] for i in keep], y[keep]


def dev_set(locate, train_per_class: int | None = None, test_per_class: int | None = None):
    """(dataset, X, y, X_test, y_test) of a benchmark row: ``locate()``'s training and held-out
    splits, each cut to seeded per-class caps (None: whole)."""
    dataset, X, y, X_test, y_test = train_and_held_out(locate())
    return (dataset, *subsampled(X, y, train_per_class), *subsampled(X_test, y_test, test_per_class))
