"""Exact and near-duplicate images, within and across splits.

Exact duplicates share a content hash. Near duplicates (re-encodes, resizes, small edits) have
perceptual hashes (imagehash's 64-bit pHash) within a small Hamming distance. A pair that straddles
train and a held-out split is leakage: the held-out accuracy then partly measures memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# pHash bits that may differ for two images to count as near duplicates. Re-encoded or rescaled
# copies differ by 0-2 of the 64 bits (oxford17flowers: 68 such pairs, every one within a class);
# from 4 bits on, distinct low-detail images collide (upscaled 8x8 digits of the same class).
NEAR_DUPLICATE_BITS = 2


@dataclass(frozen=True)
class DuplicatePair:
    first: int
    second: int
    kind: str  # "exact" or "near"
    distance: int  # Hamming distance between perceptual hashes (0 for exact)


def find_duplicates(content_hashes: list[str], perceptual_hashes: np.ndarray, *, max_bits: int = NEAR_DUPLICATE_BITS) -> list[DuplicatePair]:
    """Return every duplicate pair (i < j) among the images, in order.

    ``perceptual_hashes`` is an (n,) uint64 array. Comparing every pair cost 48 s at 100,000 images
    and grows with their square (80 minutes at 1,000,000), so the pairs are found by multi-index
    hashing instead (Norouzi et al. 2012): split the 64 bits into ``max_bits + 1`` blocks; two hashes
    within ``max_bits`` bits agree exactly on at least one block (pigeonhole), so only images sharing a
    block's value are compared. That is every pair there is, at the cost of the candidates found.
    """
    hashes = np.asarray(perceptual_hashes, dtype=np.uint64)
    candidates = [_same_key_pairs(block) for block in _blocks(hashes, max_bits + 1)]
    pairs = np.unique(np.concatenate([np.zeros((0, 2), dtype=np.int64), *candidates]), axis=0)
    distances = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]])
    found = []
    for (i, j), distance in zip(pairs[distances <= max_bits].tolist(), distances[distances <= max_bits].tolist()):
        exact = content_hashes[i] == content_hashes[j]  # identical files always have identical pHashes
        found.append(DuplicatePair(i, j, "exact" if exact else "near", 0 if exact else int(distance)))
    return found


def _blocks(hashes: np.ndarray, count: int) -> list[np.ndarray]:
    """The hashes cut into ``count`` runs of bits (64 split as evenly as possible)."""
    edges = np.linspace(0, 64, count + 1).round().astype(int)
    return [(hashes >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1) for low, high in zip(edges[:-1], edges[1:])]


def _same_key_pairs(keys: np.ndarray) -> np.ndarray:
    """Every (i, j), i < j, with keys[i] == keys[j], as an (m, 2) array: after one sort, position p
    pairs with p + k for k = 1, 2, ... while the key stays the same (the positions still in a run
    only shrink with k), so the work is the pairs found plus one pass."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    alive, k, found = np.arange(len(keys)), 1, []
    while len(alive):
        alive = alive[alive + k < len(keys)]
        alive = alive[ordered[alive] == ordered[alive + k]]
        if len(alive):
            found.append(np.sort(np.stack([order[alive], order[alive + k]], axis=1), axis=1))
        k += 1
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def phash_to_int(hash_bits: np.ndarray) -> int:
    """Pack imagehash's 8x8 boolean matrix into one unsigned 64-bit integer."""
    return int(np.packbits(np.asarray(hash_bits, dtype=bool).ravel()).view(">u8")[0])


def near_duplicate_groups(content_hashes: list[str], perceptual_hashes: np.ndarray, given=None, labels=None) -> np.ndarray:
    """A group number per image: near duplicates (and their near duplicates, transitively) share one.

    Cross-validation that puts one copy in the fitted folds and another in the scored one measures
    memory, not generalisation (alzheimer_mri4's neighbouring slices: 1,999 pairs among 5,121 training
    images; the head's 5-fold CV read 79.2% balanced accuracy, grouped 73.9%, its test split 54.3%).
    ``given`` (one value per image, such as a subject id; None for an image in no group) joins images
    the hashes cannot tell belong together: slices of one brain that do not look alike are still one patient.
    With ``labels``, the groups are :func:`separable_groups`.
    """
    groups = _linked(content_hashes, perceptual_hashes, given)
    return separable_groups(groups, labels) if labels is not None else groups


def separable_groups(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``groups`` (as numbers) with each class whose images are all one group (copies of one picture,
    or one subject's scans) ungrouped: kept together, the fold or split holding that group would have
    none of the class to learn from (sklearn: "the data contains only one class"). Its scores are then
    optimistic, as the duplicates line of the summary says."""
    y_index = np.unique(labels, return_inverse=True)[1].ravel()
    member_of = np.unique(groups, return_inverse=True)[1].ravel()
    # distinct (class, group) pairs by one sort, not a scan per class (5,000 classes, 1,000,000 images)
    pairs = np.unique(y_index.astype(np.int64) * (int(member_of.max()) + 1) + member_of) // (int(member_of.max()) + 1)
    one_group = np.bincount(pairs, minlength=int(y_index.max()) + 1) == 1
    return np.where(one_group[y_index], member_of.max() + 1 + np.arange(len(member_of)), member_of)


def _linked(content_hashes: list[str], perceptual_hashes: np.ndarray, given) -> np.ndarray:
    n = len(content_hashes)
    pairs = np.array([(p.first, p.second) for p in find_duplicates(content_hashes, perceptual_hashes)], dtype=np.int64).reshape(-1, 2)
    if given is not None:
        given = own_group_where_missing(given)
        if len(given) != n:
            raise ValueError(f"got {len(given)} groups for {n} images; give one group per image.")
        _, first, member_of = np.unique(given, return_index=True, return_inverse=True)
        pairs = np.vstack([pairs, np.stack([first[member_of], np.arange(n)], axis=1)])  # each image to its group's first
    if not len(pairs):
        return np.arange(n)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)), directed=False)[1]


def own_group_where_missing(values) -> np.ndarray:
    """``values`` (group names, None where an image has none) as an array in which each None becomes a
    group of its own."""
    return np.array([value if value is not None else f"\0{i}" for i, value in enumerate(values)], dtype=object).astype(str)


def describe_groups(groups: np.ndarray | None) -> dict:
    """``{"groups": groups of two or more images, "images": images in them, "largest": its size}``."""
    if groups is None or not len(groups):
        return {"groups": 0, "images": 0, "largest": 0}
    sizes = np.bincount(np.unique(groups, return_inverse=True)[1])
    shared = sizes[sizes > 1]
    return {"groups": int(len(shared)), "images": int(shared.sum()), "largest": int(sizes.max()) if len(shared) else 0}


def stratified_folds(y: np.ndarray, folds: int, *, groups: np.ndarray | None = None, random_state: int | None = 0) -> list:
    """(fit, held) index pairs of stratified k-fold CV that keeps every group of near duplicates inside
    one fold. Images outside groups keep the folds plain stratified k-fold gives them, so a set without
    near duplicates gets exactly the folds it always had, and the few groups of a photo set move a
    handful of images, not every fold (re-dealing all folds, as StratifiedGroupKFold does, changed the
    chosen C on flowers by fold noise alone); see :func:`place_groups` for where the groups go."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    fold_of = np.empty(len(y), dtype=int)
    for k, (_, held) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=random_state).split(np.zeros(len(y)), y)):
        fold_of[held] = k
    fold_of = place_groups(fold_of, y, groups, np.full(folds, 1 / folds))
    return [(np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(folds) if (fold_of == k).any()]


def grouped_hold_out(y: np.ndarray, share: float, *, groups: np.ndarray | None = None, random_state: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held) indices, about ``share`` held out and stratified, with no group of near duplicates
    on both sides (the plain split elsewhere, as in :func:`stratified_folds`). Where no stratified
    split exists (``share`` is fewer images than there are classes, or a class has one image) it is
    drawn plain: a few images either way, and never a larger share held out to make room."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(y)
    counts = np.unique(y, return_counts=True)[1]
    held_out = min(max(math.ceil(share * len(y)), 1), len(y) - 1)  # what sklearn holds out for a share
    stratified = counts.min() >= 2 and len(counts) <= held_out <= len(y) - len(counts)
    fit, held = train_test_split(np.arange(len(y)), test_size=held_out, stratify=y if stratified else None, random_state=random_state)
    side = np.zeros(len(y), dtype=int)
    side[held] = 1
    side = place_groups(side, y, groups, np.array([1 - share, share]))
    order = np.concatenate([fit, held])  # the plain split's shuffled order: what trains first stays so
    return order[side[order] == 0], order[side[order] == 1]


def place_groups(side: np.ndarray, y: np.ndarray, groups: np.ndarray | None, shares: np.ndarray) -> np.ndarray:
    """``side`` (a fold number per image) with each group of two or more images moved, whole, to the
    fold that is furthest below its share of the group's class (its first image's label), largest
    groups first: the folds stay stratified however many images are grouped. A class whose images
    are all one group (copies of one picture) cannot be kept apart, since the fold holding the group
    would have none of the class to learn from: its images keep their folds, ungrouped (:func:`separable_groups`)."""
    if groups is None:
        return side
    classes, y_index = np.unique(y, return_inverse=True)
    _, first, member_of, sizes = np.unique(separable_groups(groups, y), return_index=True, return_inverse=True, return_counts=True)
    shared = sizes[member_of] > 1
    if not shared.any():
        return side
    side = side.copy()
    counts = np.zeros((len(shares), len(classes)))
    np.add.at(counts, (side[~shared], y_index[~shared]), 1)
    members_of = np.split(np.argsort(member_of, kind="stable"), np.cumsum(sizes)[:-1])  # one sort, not a scan per group
    for group in np.flatnonzero(sizes > 1)[np.argsort(-sizes[sizes > 1], kind="stable")]:
        members = members_of[group]
        label = y_index[first[group]]
        below = (counts[:, label] + len(members)) / shares
        moved = np.arange(len(shares)) != side[first[group]]
        fold = int(np.lexsort(((counts.sum(axis=1) + len(members)) / shares, moved, below))[0])  # ties: its first image's fold, then the emptier
        side[members] = fold
        np.add.at(counts, (fold, y_index[members]), 1)
    return side
