"""Diagnostics and report for a 1,000-image run: time to diagnose, time to build report.html,
and its size.

    python benchmarks/bench_report.py [--per-class 100]

Fits the default linear strategy on Fashion-MNIST (10 classes x 100 training images, 96 px input,
1,000 test images) with fit_folder, which diagnoses the fit and writes the run directory; then
rebuilds the report from metrics.json alone (what `headstart report RUN` does) and times that.
Targets: the report builds in under 10 s and stays under 5 MB.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    print(machine(), flush=True)
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
