"""Fit and evaluate on an image-folder dataset; print accuracy, times, images/s and peak memory.

    python benchmarks/bench_fit.py ../shared/datasets/hymenoptera [--backbone mobilenet_v2]

Three fits on the same data, each in this process:
  1. cold: empty cache (the backbone's ONNX graph is exported and checked, every image decoded);
  2. codes cold, graph cached: what a user sees on new data with a backbone used before;
  3. warm: every code, and the advisor's plan (strategy="auto", the default), comes from the cache.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mb  # noqa: E402

from headstart import fit_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--classifier", default="logistic")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="headstart-bench-"))
    params = dict(backbone=args.backbone, classifier=args.classifier, cache_dir=str(cache))
    try:
        runs = {}
        for name in ("cold", "codes cold, graph cached", "warm"):
            if name == "codes cold, graph cached":  # new images: neither their codes nor their plan are cached
                shutil.rmtree(cache / "features")
                shutil.rmtree(cache / "plans", ignore_errors=True)
            start = time.perf_counter()
            _, summary = fit_folder(args.data, None, **params)
            runs[name] = (time.perf_counter() - start, summary)
    finally:
        shutil.rmtree(cache, ignore_errors=True)

    cold_seconds, cold = runs["cold"]
    ev = cold.evaluation
    print(f"dataset      {args.data}  ({cold.layout}; train {cold.n_train}, {ev.split} {ev.n_images}, {len(cold.classes)} classes)")
    print(f"machine      {machine()}")
    print(f"backbone     {cold.backbone}  classifier {args.classifier}  C={cold.classifier['C']:g}  engine {cold.engine}")
    print(f"accuracy     {ev.split} {ev.accuracy:.2%} (95% CI {ev.accuracy_ci95[0]:.1%}-{ev.accuracy_ci95[1]:.1%}), balanced {ev.balanced_accuracy:.2%}, chance {ev.chance_uniform:.1%}")
    for name, (seconds, summary) in runs.items():
        rate = summary.computed_codes / summary.seconds_features if summary.computed_codes else float("nan")
        print(f"fit {name:27s} {seconds:7.2f} s   features {summary.seconds_features:6.2f} s   {summary.computed_codes:5d} images through the network ({rate:.0f} img/s)")
    warm = runs["warm"][0]
    print(f"second fit speed-up: {cold_seconds / warm:.1f}x vs cold, {runs['codes cold, graph cached'][0] / warm:.1f}x vs graph-cached first fit")
    print(f"duplicates   within splits {cold.duplicates['within_split']}, across splits {cold.duplicates['cross_split']}")
    print(f"peak memory  {peak_rss_mb():.0f} MB (whole process)")


if __name__ == "__main__":
    main()
