"""Imbalance handling for training: inverse-frequency class weights and a class-balanced sampler.

Built for the hard case of 5,000 classes with 20 to 2,000 images each (1,000,000 images): the
sampler stores one int32 per image plus O(classes), and draws an epoch with a handful of vectorised
numpy operations, never a Python loop over classes or images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight

from ..errors import DataError

IMBALANCE_HANDLING = ("auto", "weights", "sampler", "both", "none")
# Largest/smallest class ratio above which imbalance is handled at all (as for the linear head)...
MILD_IMBALANCE = 1.5
# ...and above which weights alone are not enough: with 100:1 weights a rare image's gradient is
# 100x a common one's and SGD gets noisy, so the rare images are shown more often instead.
SEVERE_IMBALANCE = 10.0


def inverse_frequency_weights(labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """Per-class loss weights n / (k * count), scikit-learn's "balanced" (mean weight 1)."""
    labels = np.asarray(labels)
    classes = np.arange(n_classes if n_classes is not None else labels.max() + 1)
    present = np.unique(labels)
    weights = np.ones(len(classes))
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


@dataclass(frozen=True)
class ImbalancePlan:
    """What ``imbalance="auto"`` chose, and why, in words for the summary."""

    mode: str  # "none", "weights", "sampler" or "both"
    ratio: float
    reason: str


def plan_imbalance(labels: np.ndarray, handling: str = "auto") -> ImbalancePlan:
    """Resolve ``handling`` ("auto", "weights", "sampler", "both", "none") for these labels."""
    if handling not in IMBALANCE_HANDLING:
        raise DataError(f"imbalance handling must be one of {', '.join(IMBALANCE_HANDLING)}, got {handling!r}.")
    counts = np.bincount(np.asarray(labels))
    counts = counts[counts > 0]
    ratio = float(counts.max() / counts.min())
    if handling != "auto":
        return ImbalancePlan(handling, ratio, f"{handling} (as asked); largest/smallest class {ratio:.1f}:1")
    if ratio <= MILD_IMBALANCE:
        return ImbalancePlan("none", ratio, f"classes balanced ({ratio:.1f}:1), no reweighting")
    if ratio <= SEVERE_IMBALANCE:
        return ImbalancePlan("weights", ratio, f"classes {ratio:.1f}:1, so the loss is weighted by inverse class frequency")
    return ImbalancePlan(
        "sampler", ratio, f"classes {ratio:.0f}:1, so batches are drawn class-balanced (rare images shown more often)"
    )


class SharedShuffleSampler(torch.utils.data.Sampler[int]):
    """A new random order of ``n`` images every epoch, from ``generator``, of which each of
    ``num_replicas`` processes takes every num_replicas-th from its ``rank``.

    Every rank holds a generator seeded alike, and it draws exactly what PyTorch's RandomSampler
    (``DataLoader(shuffle=True, generator=...)``) draws from it, so one process shuffles as it always
    did, and a step of N processes, each taking its share of the batch, sees the very images one
    process's step would. Shares are equal (the order wraps around to fill the last, as
    ``DistributedSampler`` pads): every rank must take the same number of steps. Resuming restores
    the generator's state.
    """

    def __init__(self, n: int, generator: torch.Generator, *, num_replicas: int = 1, rank: int = 0):
        self.n, self.generator = n, generator
        self.num_replicas, self.rank = num_replicas, rank

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=self.generator)
        if self.num_replicas > 1:
            order = order.repeat(-(-len(self) * self.num_replicas // self.n))[: len(self) * self.num_replicas]
        yield from order[self.rank :: self.num_replicas].tolist()
        torch.randperm(self.n, generator=self.generator)  # RandomSampler's second, empty, draw: the same stream

    def __len__(self) -> int:
        return -(-self.n // self.num_replicas)


class ClassBalancedSampler(torch.utils.data.Sampler[int]):
    """Draws each sample by picking a class uniformly, then an image of that class uniformly.

    Every class is equally likely in every batch, whatever its size: minority images are repeated
    (oversampled), majority images are visited less often. ``num_samples`` (default: the dataset
    size) sets the epoch length. Reseeded each epoch from ``seed`` and ``set_epoch``, as
    ``DistributedSampler`` is, so runs are reproducible and resumable. Under several processes,
    ``num_replicas`` and ``rank`` give each its disjoint share of the same epoch's draw (every
    num_replicas-th from ``rank``), so together they draw what one process would (rounded up to
    equal shares, as ``DistributedSampler`` pads: every rank must take the same number of steps).
    """

    def __init__(self, labels, num_samples: int | None = None, *, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise DataError("ClassBalancedSampler needs a non-empty 1-D sequence of integer labels.")
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise DataError("ClassBalancedSampler needs integer class indices 0..k-1; encode labels first.")
        # Images grouped by class (CSR layout): members of class c are by_class[start[c]:start[c+1]].
        self.by_class = np.argsort(labels, kind="stable").astype(np.int32)
        counts = np.bincount(labels)
        self.classes = np.flatnonzero(counts).astype(np.int32)
        self.counts = counts[self.classes].astype(np.int64)
        self.starts = (np.cumsum(counts) - counts)[self.classes].astype(np.int64)
        self.num_samples = int(num_samples) if num_samples is not None else labels.size
        self.seed = seed
        self.epoch = 0
        self.num_replicas, self.rank = num_replicas, rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self) -> np.ndarray:
        """The indices of one epoch (this rank's share of them)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        total = len(self) * self.num_replicas
        picked = rng.integers(0, len(self.classes), total)
        offsets = (rng.random(total) * self.counts[picked]).astype(np.int64)
        return self.by_class[self.starts[picked] + offsets][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        # Lazily, as Python ints: a list of a million ints would cost ~36 MB more.
        return map(int, self.draw())

    def __len__(self) -> int:
        return -(-self.num_samples // self.num_replicas)  # this rank's share, rounded up

    @property
    def nbytes(self) -> int:
        """Memory held between epochs."""
        return self.by_class.nbytes + self.classes.nbytes + self.counts.nbytes + self.starts.nbytes
