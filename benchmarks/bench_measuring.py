"""The advisor's measuring pass: all eager against ONNX Runtime with an eager BatchNorm sample.

    python benchmarks/bench_measuring.py [--only hymenoptera ...] [--bn-samples 64 128]

For each row, MobileNetV2's measuring pass over the training images (the advisor's sample of at most
2,000) at the input size a fit chooses, from an empty cache: every batch eager with hooks (the
baseline), then with the graph of logits and tap codes in ONNX Runtime (its export counted) and the
BatchNorm inputs read eagerly on ``BN_SAMPLE`` images spread over the pass, for each sample size
given. Prints the seconds, the BN-statistics distance (threshold 0.45), the head's confidence, the
largest difference in codes relative to their size, and the layer sweep's largest difference in
cross-validated accuracy (points) against the eager pass's.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import SHARED, dev_set, machine  # noqa: E402

from headstart import TransferClassifier, get_backbone  # noqa: E402
from headstart.data.images import as_sources  # noqa: E402
from headstart.recipe import input_size as input_size_for  # noqa: E402

measuring = importlib.import_module("headstart.advisor.measure")  # the module (the package exports its function as measure)

ROWS = {  # name: (folder, input size (None: as a fit chooses), training images per class (None: all))
    "hymenoptera": (lambda: SHARED / "hymenoptera", None, None),
    "oxford17flowers": (lambda: SHARED / "oxford17flowers", None, None),
    "alzheimer_mri4-50": (lambda: SHARED / "alzheimer_mri4", None, 50),
    "alzheimer_mri4": (lambda: SHARED / "alzheimer_mri4", None, None),  # 5,120 images: the 2,000 sample
    "digits-130": (lambda: _datasets.digits(130), 96, None),
    "fashion-200": (lambda: _datasets.fashion(200), 96, None),
}


def run(spec, X, y, preprocessing, bn_sample: int | None) -> tuple[float, object, dict]:
    """One measuring pass from an empty cache; ``bn_sample`` None: every batch eager."""
    saved_graph, saved_sample = measuring._measuring_graph, measuring.BN_SAMPLE
    if bn_sample is None:
        measuring._measuring_graph = lambda *args, **kwargs: None
    else:
        measuring.BN_SAMPLE = bn_sample
    try:
        with tempfile.TemporaryDirectory() as cache:
            tick = time.perf_counter()
            measurements, sample = measuring.measure(spec, X, y, preprocessing=preprocessing, cache=False, cache_dir=Path(cache))
            return time.perf_counter() - tick, measurements, sample["codes"]
    finally:
        measuring._measuring_graph, measuring.BN_SAMPLE = saved_graph, saved_sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", choices=list(ROWS))
    parser.add_argument("--bn-samples", nargs="*", type=int, default=[64, 128])
    args = parser.parse_args()
    print(machine(), flush=True)
    spec = get_backbone("mobilenet_v2")
    print("| row | images measured | input | pass | seconds | BN distance | head confidence | largest code difference | sweep difference (points) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.only or ROWS:
        locate, size, per_class = ROWS[name]
        _, X, labels, _, _ = dev_set(locate, per_class)
        _, y = np.unique(labels, return_inverse=True)
        size = input_size_for(TransferClassifier("mobilenet_v2", input_size=size).get_params(), as_sources(X))
        preprocessing = spec.preprocessing.with_size(size)
        seconds, base, base_codes = run(spec, X, y, preprocessing, None)
        rows = [("all eager", seconds, base, 0.0, 0.0)]
        for bn_sample in args.bn_samples:
            seconds, m, codes = run(spec, X, y, preprocessing, bn_sample)
            gap = max(float(np.abs(codes[tap] - base_codes[tap]).max() / np.abs(base_codes[tap]).max()) for tap in codes)
            sweep = max(abs(a.cv_accuracy - b.cv_accuracy) for a, b in zip(m.sweep, base.sweep)) * 100
            rows.append((f"ONNX, BN on {bn_sample}", seconds, m, gap, sweep))
        for label, seconds, m, gap, sweep in rows:
            print(f"| {name} | {m.n_measured} | {size} | {label} | {seconds:.1f} | {m.similarity.bn_distance:.3f} | "
                  f"{m.similarity.head_confidence:.3f} | {gap:.1e} | {sweep:.2f} |", flush=True)


if __name__ == "__main__":
    main()
