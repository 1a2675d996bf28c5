"""Diagnostics and report: time to diagnose, time to build report.html, and its size.

    python benchmarks/bench_report.py [--per-class 100]
    python benchmarks/bench_report.py --classes 5000

Fits the default linear strategy on Fashion-MNIST (10 classes x 100 training images, 96 px input,
1,000 test images) with fit_folder, which diagnoses the fit and writes the run directory; then
rebuilds the report from metrics.json alone (what `headstart report RUN` does) and times that.
Targets: the report builds in under 10 s and stays under 5 MB.

With --classes K: a run of K classes on synthetic long-tailed codes (benchmarks/_synthetic.py,
20 to 2,000 a class, mean 40; the first 128 of the 1,280 code dimensions, since what the report
costs depends on the classes and held-out images, not the width), 5 held-out codes of every class,
a mini-batch head at one C; then diagnose and write metrics.json and report.html as a fit does,
timed apart. Targets at 5,000 classes: report built in under 30 s, under 10 MB.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import machine  # noqa: E402

from headstart import fit_folder  # noqa: E402
from headstart.report import write_report  # noqa: E402


def many_classes(k: int) -> None:
    import json

    import numpy as np

    import _synthetic as synthetic
    from headstart.backbones import get_backbone
    from headstart.diagnostics import diagnose
    from headstart.fitted import FittedModel
    from headstart.strategies.linear import fit_linear_head

    width = 128
    train = synthetic.long_tailed(synthetic.class_counts(k, mean=40.0))
    test = synthetic.balanced_test(k, per_class=5)
    codes, test_codes = np.ascontiguousarray(train.codes[:, :width]), np.ascontiguousarray(test.codes[:, :width])
    print(f"{k} classes: {len(train.labels):,} training codes ({np.bincount(train.labels).min()} to {np.bincount(train.labels).max()} a class), "
          f"{len(test.labels):,} held out, {width} wide", flush=True)  # fmt: skip
    start = time.perf_counter()
    head, report = fit_linear_head(codes, train.labels, solver="minibatch", Cs=(0.01,), progress=True)
    print(f"  head (mini-batch, C=0.01)     {time.perf_counter() - start:6.1f} s", flush=True)
    names = np.array([f"class {i:04d}" for i in range(k)])
    backbone = get_backbone("mobilenet_v2")
    record = FittedModel(names, head, report, "linear", backbone.name, "pre_logits", backbone.preprocessing, "synthetic", len(train.labels))
    start = time.perf_counter()
    diagnostics = diagnose(record, codes, names[train.labels], eval_scores=head.decision_function(test_codes).astype(np.float32),
                           eval_labels=names[test.labels], weights=False)  # fmt: skip
    diagnosed = time.perf_counter() - start
    errors = diagnostics["errors"]
    metrics = {"data": f"synthetic {k} classes", "backbone": backbone.name, "classes": names.tolist(), "n_train": len(train.labels),
               "seconds": 0.0, "seconds_features": 0.0, "diagnostics": diagnostics}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        start = time.perf_counter()
        (run / "metrics.json").write_text(json.dumps(metrics))
        path = write_report(run)
        build = time.perf_counter() - start
        size, metrics_size = path.stat().st_size, (run / "metrics.json").stat().st_size
    probed = diagnostics["probed"]
    print(f"  diagnose                      {diagnosed:6.1f} s  (probe on {probed['images']:,} codes of {probed['classes']} of {probed['of_classes']} classes)")
    print(f"  metrics.json + report.html    {build:6.2f} s  (target < 30 s)")
    print(f"  report.html                   {size / 1e6:6.2f} MB (target < 10 MB); metrics.json {metrics_size / 1e6:.2f} MB")
    print(f"  per-class rows {len(errors['per_class']):,}; balanced accuracy {errors['balanced_accuracy']:.2%}; verdict: {diagnostics['verdict']['headline']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--classes", type=int, default=0, help="a run of this many classes on synthetic codes instead")
    args = parser.parse_args()
    print(machine(), flush=True)
    if args.classes:
        return many_classes(args.classes)
    data = _datasets.fashion(args.per_class)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        fit_folder(data, run, strategy="linear", input_size=96, diagnostics=False)  # warm the feature cache
        start = time.perf_counter()
        _, plain = fit_folder(data, run, strategy="linear", input_size=96, diagnostics=False)
        without = time.perf_counter() - start
        start = time.perf_counter()
        _, summary = fit_folder(data, run, strategy="linear", input_size=96)
        with_diagnostics = time.perf_counter() - start
        start = time.perf_counter()
        path = write_report(run)
        build = time.perf_counter() - start
        size = path.stat().st_size
    print(f"{data}: {summary.n_train} training images, {summary.evaluation.n_images} test images, cached codes")
    print(f"  fit without diagnostics       {without:6.1f} s")
    print(f"  fit with diagnostics + report {with_diagnostics:6.1f} s  (+{with_diagnostics - without:.1f} s)")
    print(f"  report rebuilt from metrics   {build:6.2f} s  (target < 10 s)")
    print(f"  report.html                   {size / 1e6:6.2f} MB (target < 5 MB)")
    print(f"  verdict: {summary.verdict}")
    for step in summary.diagnostics["verdict"]["next_steps"]:
        print(f"    - {step}")


if __name__ == "__main__":
    main()
