"""Peak memory of a fit on 10,000 images: images must be streamed, never all held decoded.

    python benchmarks/bench_memory.py [--images 10000] [--source ../shared/datasets/oxford17flowers] [--time-budget 600]

Writes N distinct JPEGs (random crops of the source photos, 10 classes) to a temporary folder,
then runs ``fit_folder`` in a child process and reports the child's peak resident memory, next to
the same fit on 500 of the images: flat memory means streaming works. Each size is fitted with
``strategy="linear"`` and with the default ``"auto"`` under --time-budget (without a budget, auto
would fine-tune on 10,000 images: an hour or more on a 2-core CPU). Every fit starts from an empty cache.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = """
import resource, sys, time
from headstart import fit_folder
start = time.perf_counter()
strategy, budget = sys.argv[3], float(sys.argv[4])
_, summary = fit_folder(sys.argv[1], None, cache_dir=sys.argv[2], strategy=strategy, time_budget=budget if strategy == "auto" else None)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
used = (summary.plan or {}).get("strategy", strategy)
print(f"{summary.n_train + summary.evaluation.n_images} {time.perf_counter() - start:.1f} {peak:.0f} {summary.evaluation.accuracy:.4f} {used}")
"""


def write_images(source: Path, target: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    classes = sorted(p for p in (source / "train").iterdir() if p.is_dir())[:10]
    per_class = count // len(classes)
    for class_dir in classes:
        photos = [Image.open(p).convert("RGB") for p in sorted(class_dir.iterdir())]
        out = target / class_dir.name
        out.mkdir(parents=True)
        for i in range(per_class):
            photo = photos[i % len(photos)]
            w, h = photo.size
            side = int(min(w, h) * rng.uniform(0.6, 1.0))
            x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
            photo.crop((x, y, x + side, y + side)).resize((320, 320)).save(out / f"{i:05d}.jpg", quality=90)


def fit_in_child(folder: Path, cache: Path, strategy: str, budget: float) -> tuple[int, float, float, float, str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(cache), strategy, str(budget)], capture_output=True, text=True, check=True)
    images, seconds, peak, accuracy, used = out.stdout.split()
    return int(images), float(seconds), float(peak), float(accuracy), used


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--time-budget", type=float, default=600.0, help="seconds the auto fits may take (default 600)")
    parser.add_argument("--source", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/oxford17flowers"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="headstart-memory-"))
    try:
        start = time.perf_counter()
        write_images(Path(args.source), work / "big", args.images)
        write_images(Path(args.source), work / "small", 500, seed=1)
        print(f"wrote {args.images} + 500 JPEGs (320x320) in {time.perf_counter() - start:.0f} s")
        for strategy in ("linear", "auto"):
            for name in ("small", "big"):
                cache = work / f"cache-{name}-{strategy}"
                images, seconds, peak, accuracy, used = fit_in_child(work / name, cache, strategy, args.time_budget)
                shutil.rmtree(cache, ignore_errors=True)
                print(f"{strategy:6s} fit on {images:6d} images: {seconds:6.1f} s, {images / seconds:5.1f} img/s end to end, "
                      f"peak RSS {peak:6.0f} MB  (ran {used}, accuracy {accuracy:.1%})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
