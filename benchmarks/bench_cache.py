"""The feature cache at 100,000 entries: one small file per entry against one packed array.

    python benchmarks/bench_cache.py [--entries 100000] [--dim 1280]

Writes --entries random codes (float32, --dim wide: MobileNetV2's pre-logits) into a fresh
FeatureCache under $TMPDIR, then reads them all back the way a warm fit does (one get per content
hash), twice: with the files in the page cache, and after asking the kernel to drop their pages
(posix_fadvise DONTNEED, what a cache on a disk that has not been read since looks like). The
baseline, measured on the same codes in the same run: one packed .npy of all entries plus an
index from content hash to row, read by one gather (the layout a sharded cache would use).
Printed: microseconds per entry for each, and the 100,000-image total.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402

from _common import machine  # noqa: E402

from headstart.features.cache import FeatureCache  # noqa: E402


def drop_pages(paths) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(label: str, n: int, action) -> float:
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    print(f"  {label:<44} {seconds:7.2f} s  {seconds / n * 1e6:8.1f} us/entry", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    args = parser.parse_args()
    print(machine(), flush=True)
    n, dim = args.entries, args.dim
    rng = np.random.default_rng(0)
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    codes = rng.random((n, dim), dtype=np.float32)
    print(f"{n:,} entries of {dim} float32 ({n * dim * 4 / 1e9:.2f} GB)")
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache("bench", dim, root=Path(tmp))
        timed("one file per entry: write", n, lambda: [cache.put(h, codes[i], i) for i, h in enumerate(hashes)])
        timed("one file per entry: read (page cache)", n, lambda: [cache.get(h) for h in hashes])
        files = [cache._path(h) for h in hashes]
        drop_pages(files)
        timed("one file per entry: read (pages dropped)", n, lambda: [cache.get(h) for h in hashes])

        pack = Path(tmp) / "pack.npy"
        index_path = Path(tmp) / "pack.index"
        timed("packed: write array + index", n, lambda: (np.save(pack, codes), index_path.write_text("\n".join(hashes))))

        def read_packed():
            index = {h: row for row, h in enumerate(index_path.read_text().split("\n"))}
            rows = np.fromiter((index[h] for h in hashes), dtype=np.int64, count=n)
            return np.load(pack, mmap_mode="r")[np.sort(rows)]

        timed("packed: read (page cache)", n, read_packed)
        drop_pages([pack, index_path])
        timed("packed: read (pages dropped)", n, read_packed)


if __name__ == "__main__":
    main()
