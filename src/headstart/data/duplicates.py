"""Exact and near-duplicate images, within and across splits.

Exact duplicates share a content hash. Near duplicates (re-encodes, resizes, small edits) have
perceptual hashes (imagehash's 64-bit pHash) within a small Hamming distance. A pair that straddles
train and a held-out split is leakage: the held-out accuracy then partly measures memory.
"""

from __future__ import annotations

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
