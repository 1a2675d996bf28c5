"""The feature cache at 100,000 entries: its packs against one small file per entry (the layout before).

    python benchmarks/bench_cache.py [--entries 100000] [--dim 1280]

Writes --entries random codes (float32, --dim wide: MobileNetV2's pre-logits) under $TMPDIR in
both layouts, then reads them all back the way a warm fit does (a new FeatureCache, one get per
content hash), twice: with the files in the page cache, and after asking the kernel to drop their
pages (posix_fadvise DONTNEED, what a cache on a disk not read since looks like). The baseline,
measured on the same codes in the same run, is the layout before packs: one file per entry, written
to a temporary file, flushed and renamed (read by FeatureCache's fallback for it). Printed: seconds
and microseconds per entry.
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

from headstart._atomic import atomic_path  # noqa: E402
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
        root = Path(tmp)
        files = [root / "features" / "before" / h[:2] / f"{h}.codes" for h in hashes]

        def write_files():  # the layout before packs: one file per entry, written atomically
            for path, i in zip(files, range(n)):
                with atomic_path(path) as part:
                    part.write_bytes(np.array([i], "<u8").tobytes() + codes[i].tobytes())

        before = FeatureCache("before", dim, root=root)
        timed("one file per entry (before): write", n, write_files)
        timed("one file per entry (before): read, page cache", n, lambda: [before.get(h) for h in hashes])
        drop_pages(files)
        timed("one file per entry (before): read, pages dropped", n, lambda: [reader.get(h) for reader in [FeatureCache("before", dim, root=root)] for h in hashes])

        packed = FeatureCache("packed", dim, root=root)
        timed("packs (now): write", n, lambda: [packed.put(h, codes[i], i) for i, h in enumerate(hashes)])
        timed("packs (now): read, page cache (a new reader: index too)", n, lambda: [reader.get(h) for reader in [FeatureCache("packed", dim, root=root)] for h in hashes])
        drop_pages(list(packed.packs.iterdir()))
        timed("packs (now): read, pages dropped", n, lambda: [reader.get(h) for reader in [FeatureCache("packed", dim, root=root)] for h in hashes])
        assert np.array_equal(FeatureCache("packed", dim, root=root).get(hashes[-1]).codes, codes[-1])


if __name__ == "__main__":
    main()
