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


def find_duplicates(
    content_hashes: list[str],
    perceptual_hashes: np.ndarray,
    *,
    max_bits: int = NEAR_DUPLICATE_BITS,
    chunk: int = 2048,
) -> list[DuplicatePair]:
    """Return every duplicate pair (i < j) among the images.

    ``perceptual_hashes`` is an (n,) uint64 array; the pairwise Hamming distances are computed in
    blocks, so 10,000 images cost ~50M popcounts, not a Python loop.
    """
    n = len(content_hashes)
    hashes = np.asarray(perceptual_hashes, dtype=np.uint64)
    pairs: list[DuplicatePair] = []
    for start in range(0, n, chunk):
        block = hashes[start : start + chunk]
        distances = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distances <= max_bits)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if c <= i:
                continue
            exact = content_hashes[i] == content_hashes[c]
            pairs.append(DuplicatePair(i, c, "exact" if exact else "near", 0 if exact else int(distances[r, c])))
    # Identical files always have identical pHashes, so the loop above already saw them.
    return pairs


def phash_to_int(hash_bits: np.ndarray) -> int:
    """Pack imagehash's 8x8 boolean matrix into one unsigned 64-bit integer."""
    return int(np.packbits(np.asarray(hash_bits, dtype=bool).ravel()).view(">u8")[0])
