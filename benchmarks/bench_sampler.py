"""Memory and speed of the class-balanced sampler at 1,000,000 images over 5,000 classes.

    python benchmarks/bench_sampler.py [--images 1000000] [--classes 5000]

Class sizes run from 20 to 2,000 images (log-uniform, the case of the issue tracker). Memory is
measured with tracemalloc (numpy reports its buffers to it), not counting the labels array the
caller already holds.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from headstart.data.sampling import ClassBalancedSampler


def class_sizes(images: int, classes: int, rng) -> np.ndarray:
    """Log-uniform class sizes from exactly 20 to exactly 2,000 images, summing to ``images``."""
    sizes = np.exp(rng.uniform(np.log(20), np.log(2000), classes))
    sizes[:2] = 20, 2000
    for _ in range(50):  # rescale the free classes until clipping to [20, 2000] stops moving the total
        free = (sizes > 20) & (sizes < 2000)
        sizes[free] *= (images - sizes[~free].sum()) / sizes[free].sum()
        sizes = np.clip(sizes, 20, 2000)
    sizes = np.round(sizes).astype(np.int64)
    free = np.flatnonzero((sizes > 21) & (sizes < 1999))
    missing = images - sizes.sum()
    sizes[free[: abs(missing)]] += np.sign(missing)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=5_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sizes = class_sizes(args.images, args.classes, rng)
    labels = rng.permutation(np.repeat(np.arange(args.classes, dtype=np.int32), sizes))

    tracemalloc.start()
    start = time.perf_counter()
    sampler = ClassBalancedSampler(labels, seed=0)
    built = time.perf_counter() - start
    start = time.perf_counter()
    epoch = sampler.draw()
    drawn = time.perf_counter() - start
    start = time.perf_counter()
    consumed = sum(1 for _ in sampler)  # what a DataLoader does with it
    iterated = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    per_class = np.bincount(labels[epoch], minlength=args.classes)
    print(f"labels       {labels.size:,} images, {args.classes:,} classes, sizes {sizes.min()}-{sizes.max()} (ratio {sizes.max() / sizes.min():.0f}:1)")
    print(f"memory       held between epochs {sampler.nbytes / 2**20:.1f} MB; peak while building, drawing and iterating an epoch {peak / 2**20:.1f} MB")
    print(f"time         build {built * 1000:.0f} ms, draw one epoch of {epoch.size:,} indices {drawn * 1000:.0f} ms, iterate it {iterated * 1000:.0f} ms ({consumed:,} indices)")
    print(f"balance      draws per class in one epoch: mean {per_class.mean():.0f}, min {per_class.min()}, max {per_class.max()} (uniform over classes)")


if __name__ == "__main__":
    main()
