"""Synthetic long-tailed CNN codes: thousands of overlapping classes, 20 to 2,000 codes each.

A class is a centre in a 128-dimensional latent space; a code is the class's centre plus noise in
that space, seen through a fixed random map into 1,280 code dimensions, plus a little noise in all
of them, through a ReLU (CNN codes are non-negative and concentrate their variance in a few hundred
directions). Part of the noise lies along a few shared "nuisance" directions with a large spread,
as lighting or background do in real codes: a classifier that learns to discount them (a linear
head) does better than one that measures plain distances (nearest class mean). Centres are close
enough that classes overlap, so accuracy stays informative.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 1280
LATENT = 128
NUISANCE = 16
CENTRE_SPREAD = 0.35  # centres' spread per latent dimension, against within-class noise 1: how much classes overlap
NUISANCE_SPREAD = 4.0  # along each of the NUISANCE shared directions
ISOTROPIC = 0.3  # noise in every code dimension


@dataclass
class CodeSet:
    codes: np.ndarray  # (n, DIM) float32, or a read-only memory map
    labels: np.ndarray


def class_counts(n_classes: int, low: int = 20, high: int = 2000, mean: float = 200.0, seed: int = 0) -> np.ndarray:
    """Codes per class, from ``high`` down to ``low`` along the class ranks (log-count falling as
    rank**p, p chosen for the asked ``mean``), in a random class order."""
    ranks = np.arange(n_classes) / max(1, n_classes - 1)
    counts_for = lambda p: np.round(high * (low / high) ** (ranks**p)).astype(np.int64)  # noqa: E731
    lo, hi = 0.01, 10.0  # the mean falls as p falls (the tail arrives sooner)
    for _ in range(60):
        p = (lo * hi) ** 0.5
        lo, hi = (p, hi) if counts_for(p).mean() < mean else (lo, p)
    counts = counts_for((lo * hi) ** 0.5)
    np.random.default_rng(seed).shuffle(counts)
    return counts


class Generator:
    """Draws codes of ``n_classes`` classes; the same seed gives the same classes."""

    def __init__(self, n_classes: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.centres = rng.normal(0, CENTRE_SPREAD, (n_classes, LATENT)).astype(np.float32)
        self.lift = (rng.normal(0, 1, (LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)  # keeps lengths, on average
        self.nuisance = (rng.normal(0, 1, (NUISANCE, DIM)) * NUISANCE_SPREAD / np.sqrt(DIM)).astype(np.float32)
        self.offset = rng.normal(0.3, 0.1, DIM).astype(np.float32)

    def draw(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        latent = self.centres[labels] + rng.standard_normal((len(labels), LATENT), dtype=np.float32)
        nuisance = rng.standard_normal((len(labels), NUISANCE), dtype=np.float32) @ self.nuisance
        isotropic = ISOTROPIC * rng.standard_normal((len(labels), DIM), dtype=np.float32)
        return np.maximum(self.offset + latent @ self.lift + nuisance + isotropic, 0.0)


def long_tailed(counts: np.ndarray, seed: int = 0, path: Path | None = None, chunk: int = 65536) -> CodeSet:
    """Training codes in a random order (to ``path`` as a .npy memory map, when given), labelled."""
    generator = Generator(len(counts), seed)
    rng = np.random.default_rng(seed + 1)
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    if path is None:
        return CodeSet(np.vstack([generator.draw(labels[i : i + chunk], rng) for i in range(0, len(labels), chunk)]), labels)
    codes = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(labels), DIM))
    for i in range(0, len(labels), chunk):
        codes[i : i + chunk] = generator.draw(labels[i : i + chunk], rng)
    codes.flush()
    del codes
    return CodeSet(np.load(path, mmap_mode="r"), labels)


def balanced_test(n_classes: int, per_class: int = 10, seed: int = 0) -> CodeSet:
    """``per_class`` fresh codes of every class (the training set's classes: same ``seed``)."""
    labels = np.repeat(np.arange(n_classes), per_class)
    return CodeSet(Generator(n_classes, seed).draw(labels, np.random.default_rng(seed + 2)), labels)


def nearest_mean_balanced_accuracy(train: CodeSet, test: CodeSet, n_classes: int, chunk: int = 65536) -> float:
    """Balanced accuracy of the nearest-class-mean classifier on standardised codes."""
    total, squares = np.zeros(DIM), np.zeros(DIM)
    sums, counts = np.zeros((n_classes, DIM)), np.zeros(n_classes)
    for i in range(0, len(train.labels), chunk):
        block = np.asarray(train.codes[i : i + chunk], dtype=np.float64)
        total += block.sum(0)
        squares += (block * block).sum(0)
        np.add.at(sums, train.labels[i : i + chunk], block)
        counts += np.bincount(train.labels[i : i + chunk], minlength=n_classes)
    mean = total / len(train.labels)
    scale = np.sqrt(np.maximum(squares / len(train.labels) - mean**2, 1e-12))
    centres = ((sums / np.maximum(counts, 1)[:, None]) - mean) / scale
    x = (test.codes - mean) / scale
    distances = (x * x).sum(1)[:, None] - 2 * x @ centres.T + (centres * centres).sum(1)[None]
    distances[:, counts == 0] = np.inf
    return balanced_accuracy(distances.argmin(1), test.labels)


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    hits = np.bincount(truth, weights=predicted == truth)
    totals = np.bincount(truth)
    present = totals > 0
    return float((hits[present] / totals[present]).mean())
