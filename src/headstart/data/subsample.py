"""Row subsets that keep every class: a held-out split, a capped sample, a class subset, and
whole-number shares. Each is a sort and at most one pass over the classes (never over the rows in
Python), so they stay cheap at 1,000,000 labels over 5,000 classes; the mini-batch head, the advisor's measuring sample and the
diagnostics' probe all draw from here."""

from __future__ import annotations

import numpy as np


def median_count(counts) -> int:
    """The median of per-class image counts as a whole number: the lower middle class's own count
    (never "15.5 images per class")."""
    return int(np.percentile(np.asarray(counts), 50, method="lower"))


def held_out_split(y: np.ndarray, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, held out): ``share`` of each class held out, rounded, but at least one
    of every class with two or more codes, and never a class's only code."""
    order = np.argsort(y, kind="stable")
    counts = np.bincount(y)
    held = []
    start = 0
    for count in counts:
        members = order[start : start + count]
        start += count
        if count >= 2:
            take = min(count - 1, max(1, round(share * count)))
            held.append(rng.choice(members, take, replace=False))
    held = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    keep = np.ones(len(y), dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), held


def capped_sample(y: np.ndarray, rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``limit`` of ``rows``, sorted, keeping every class: each class's rows up to one
    common cap (the largest that fits), so the rarest classes, whose C matters most, stay whole."""
    if len(rows) <= limit:
        return rows
    counts = np.bincount(y[rows])
    low, high = 1, int(counts.max())
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if np.minimum(counts, middle).sum() <= limit else (low, middle - 1)
    by_class = rows[np.argsort(y[rows], kind="stable")]
    starts = np.concatenate([[0], np.cumsum(counts)])
    kept = [rng.choice(by_class[a:b], min(b - a, low), replace=False) for a, b in zip(starts[:-1], starts[1:]) if b > a]
    return np.sort(np.concatenate(kept))


def class_subset(n_classes: int, limit: int, random_state: int = 0) -> np.ndarray:
    """All ``n_classes`` class indices, or ``limit`` of them chosen at random (sorted)."""
    if n_classes <= limit:
        return np.arange(n_classes)
    return np.sort(np.random.default_rng(random_state).choice(n_classes, limit, replace=False))


def largest_remainder(room: np.ndarray, total: int) -> np.ndarray:
    """``total`` items shared in proportion to ``room`` (whole numbers, none above its room)."""
    share = room / room.sum() * total
    given = np.minimum(np.floor(share).astype(int), room)
    while given.sum() < total:  # hand out what rounding left, largest remainders first, within room
        open_ = given < room
        remainder = np.where(open_, share - given, -np.inf)
        order = np.argsort(-remainder, kind="stable")[: total - int(given.sum())]
        given[order[open_[order]]] += 1
    return given
