"""Style index at scale: build a 10,000-image index, then time queries and measure its size.

    python benchmarks/bench_style_index.py [--images 10000] [--size 128] [--backbone vgg19] [--precision auto]

The images are Fashion-MNIST's (apt install dataset-fashion-mnist), 10,000 real 28 px photos of
clothes, fed to the network at --size pixels (default: the style default, 128 px).
The index's size and its scan time do not depend on the input size (every image is a fixed
1,024-number sketch); describing the query and re-ranking do, so they are also timed at 224 px,
and in fp32 beside the default precision.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, peak_rss_mb  # noqa: E402
from _datasets import fashion  # noqa: E402

from headstart.style import StyleIndex, StyleSettings  # noqa: E402
from headstart.style.descriptors import DEFAULT_STYLE_SIZE, layer_weights  # noqa: E402
from headstart.style.evaluate import pairwise_sq_distances  # noqa: E402


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls (after one warm-up), and its last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=DEFAULT_STYLE_SIZE)
    parser.add_argument("--backbone", default="vgg19")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    print(f"machine  {machine()}")

    root = fashion(args.images // 10) / "train"
    queries = sorted((fashion(args.images // 10) / "test").rglob("*.png"))[:: 50][: args.queries]
    work = Path(tempfile.mkdtemp(prefix="headstart-style-bench-"))
    try:
        settings = StyleSettings(backbone=args.backbone, input_size=args.size, precision=args.precision)
        start = time.perf_counter()
        index, report = StyleIndex.build(root, settings, progress=True)
        build_s = time.perf_counter() - start
        index.save(work / "index")
        arithmetic = "bf16" if index.extractor.network.bf16 else "fp32"
        print(f"index    {len(index)} images, {args.backbone} at {args.size} px in {arithmetic}, {index.settings.sketch_dim} numbers each; built in {build_s:.0f} s ({len(index) / build_s:.0f} img/s)")
        print(f"disk     {folder_mb(work / 'index'):.1f} MB  (target < 500 MB)")
        exact_mb = sum(index.sizes) * 4 * len(index) / 1e6
        print(f"         the exact Gram vectors would take {exact_mb:,.0f} MB in float32")

        start = time.perf_counter()
        index = StyleIndex.load(work / "index")
        print(f"load     {(time.perf_counter() - start) * 1000:.0f} ms")
        print(f"update   {index.update().summary()}  (nothing changed)")

        describe_ms, described = timed(lambda: index.describe([str(queries[0])]), 5)
        query_sketch = index.sketch(described.vectors)[0]
        scan_ms, _ = timed(lambda: np.argpartition(index.sketch_distances(query_sketch), 10)[:10], 20)
        k = 5
        sketch_only = [timed(lambda q=q: index.search(str(q), k, rerank=0), 1)[0] for q in queries]
        full = [timed(lambda q=q: index.search(str(q), k), 1)[0] for q in queries]
        print(f"query    describe {describe_ms:.0f} ms + scan {scan_ms:.1f} ms; search k={k}: {statistics.median(sketch_only):.0f} ms sketch only, "
              f"{statistics.median(full):.0f} ms with exact re-ranking of 10 (medians over {len(queries)} queries; target < 200 ms)")
        # The sketch's estimates against exact distances, over every pair of 30 indexed images.
        sample = [str(root / e.path) for e in index.entries[:: len(index) // 30][:30]]
        described = index.describe(sample)
        weights = layer_weights(index.layers, index.settings.weights)
        exact = sum(w * pairwise_sq_distances(v) for w, v in zip(weights, described.vectors))
        sk = index.sketch(described.vectors).astype(np.float64)
        estimate = ((sk[:, None] - sk[None]) ** 2).sum(-1)
        pairs = np.triu_indices(len(sample), 1)
        error = estimate[pairs] / exact[pairs] - 1
        print(f"sketch   estimate / exact - 1 over {len(error)} pairs: mean {error.mean():+.1%}, std {error.std():.1%}, "
              f"worst {np.abs(error).max():.1%} (expected spread sqrt(2/{index.settings.sketch_dim}) = {np.sqrt(2 / index.settings.sketch_dim):.1%})")

        # Recall of the true top k (the exact distances of the sketch's best 100) among what a search returns.
        recall_sketch, recall_rerank = [], []
        for q in queries[:10]:
            truth = {m.path for m in index.search(str(q), k, rerank=100)}
            recall_sketch.append(len(truth & {m.path for m in index.search(str(q), k, rerank=0)}) / k)
            recall_rerank.append(len(truth & {m.path for m in index.search(str(q), k)}) / k)
        print(f"ranking  recall of the exact top {k}: {np.mean(recall_sketch):.0%} sketch only, {np.mean(recall_rerank):.0%} with re-ranking of {2 * k} (10 queries)")

        # 100,000 sketches: the 10,000 repeated ten times (the scan's cost depends only on their number).
        big = StyleIndex(index.root, index.settings, index.entries * 10, np.tile(index.sketches, (10, 1)), index.layers, index.sizes)
        big_ms, _ = timed(lambda: np.argpartition(big.sketch_distances(query_sketch), 10)[:10], 10)
        big = big.sketches
        print(f"100k     scan of {len(big):,} sketches {big_ms:.0f} ms, {big.nbytes / 1e6:.0f} MB in memory")

        # The same index answering queries described otherwise (distances meaningless, the work real).
        others = [("at 224 px", replace(settings, input_size=224))]
        if index.extractor.network.bf16:
            others += [("in fp32", replace(settings, precision="fp32")), ("at 224 px in fp32", replace(settings, input_size=224, precision="fp32"))]
        for what, other in others:
            variant = StyleIndex(index.root, other, index.entries, index.sketches, index.layers, index.sizes)
            sketch = [timed(lambda q=q: variant.search(str(q), k, rerank=0), 1)[0] for q in queries[:5]]
            full = [timed(lambda q=q: variant.search(str(q), k), 1)[0] for q in queries[:3]]
            print(f"{what}: search k={k}: {statistics.median(sketch):.0f} ms sketch only, {statistics.median(full):.0f} ms with exact re-ranking of 10")
        print(f"memory   peak {peak_rss_mb():.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
