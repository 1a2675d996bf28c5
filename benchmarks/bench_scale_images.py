"""End to end at scale: `headstart fit` on a generated long-tailed image folder, on 1 and 2 processes.

    python benchmarks/bench_scale_images.py [--classes 300] [--mean 100] [--low 10] [--high 500] [--nproc 1 2]

The folder (benchmarks/_generated_images.py: small striped pictures, --classes classes of --low to
--high training images, Zipf-like, 5 test images each) is written once under
$TMPDIR/headstart-scale. For each process count, the CLI fits it twice, each run in a fresh
process: cold (an empty feature cache: every image read, hashed and through the network) and warm
(the same cache: nothing recomputed). Printed per run: wall time, where it went (metrics.json's
seconds_by_phase), peak memory of the largest process, the head's solver and C, accuracy and
balanced accuracy on the test split; for the warm run, the milliseconds per image beyond reading
the codes and fitting the head (target: under 1 ms). Across process counts: the accuracies should
agree within half a point.

    python benchmarks/bench_scale_images.py --solvers 50 100 150 300

Where fit_linear_head's solver threshold comes from, on real CNN codes: for the first K classes of
the folder, the linear head by scikit-learn and by the mini-batch solver (TransferClassifier,
codes from the feature cache, one warm fit first), time and balanced accuracy on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402
from _generated_images import generated_folder  # noqa: E402

STORE = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "headstart-scale"
FIT = ["--strategy", "linear", "--input-size", "64"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--classes", type=int, default=300)
    parser.add_argument("--mean", type=float, default=100)
    parser.add_argument("--low", type=int, default=10)
    parser.add_argument("--high", type=int, default=500)
    parser.add_argument("--nproc", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--solvers", type=int, nargs="*", help="compare the two solvers on the first K classes, for each K")
    args = parser.parse_args()
    print(machine(), flush=True)
    start = time.perf_counter()
    data = generated_folder(STORE, args.classes, args.mean, args.low, args.high)
    shape = json.loads((data / "done.json").read_text())
    print(f"{data}: {shape['train']:,} training and {shape['test']:,} test images of {shape['classes']} classes (ready in {time.perf_counter() - start:.0f} s)", flush=True)
    if args.solvers:
        return compare_solvers(data, args.solvers)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in args.nproc:
            cache = Path(tmp) / f"cache-{nproc}"
            for kind in ("cold", "warm"):
                rows.append(fit(data, Path(tmp) / f"run-{nproc}-{kind}", cache, nproc, kind))
            shutil.rmtree(cache)
    print("\n| processes | cache | wall s | finding images | codes | fit (head) | evaluation | diagnostics | summary | peak GB | solver, C | accuracy | balanced |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        p = r["phases"]
        print(
            f"| {r['nproc']} | {r['kind']} | {r['wall']:.0f} | {p.get('finding images', 0):.1f} | {p.get('codes', 0):.1f} | {p.get('fit', 0):.1f} "
            f"| {p.get('evaluation', 0):.1f} | {p.get('diagnostics', 0):.1f} | {p.get('summary', 0):.1f} | {r['peak_gb']:.2f} "
            f"| {r['solver']}, {r['C']:g} | {r['accuracy']:.2%} | {r['balanced']:.2%} |"
        )
    for r in rows:
        if r["kind"] == "warm":
            beyond = r["wall"] - r["phases"].get("codes", 0) - r["phases"].get("fit", 0)
            print(f"warm, {r['nproc']} process(es): {beyond:.1f} s beyond reading the codes and fitting the head, "
                  f"{beyond / r['images'] * 1e3:.2f} ms per image (target < 1 ms); codes read in {r['phases'].get('codes', 0):.1f} s")  # fmt: skip


def compare_solvers(data: Path, sizes: list[int]) -> None:
    from sklearn.metrics import balanced_accuracy_score

    from headstart import TransferClassifier
    from headstart.data import load_dataset

    records = load_dataset(data).records
    print("\n| classes | codes | codes x classes | solver | C | seconds | balanced accuracy |\n|---|---|---|---|---|---|---|", flush=True)
    for k in sizes:
        chosen = {f"c{i:04d}" for i in range(k)}
        train = [r for r in records if r.split == "train" and r.label in chosen]
        test = [r for r in records if r.split == "test" and r.label in chosen]
        for solver in ("minibatch", "sklearn"):
            model = TransferClassifier(strategy="linear", input_size=64, solver=solver)
            start = time.perf_counter()
            model.fit([r.path for r in train], [r.label for r in train])
            seconds = time.perf_counter() - start
            accuracy = balanced_accuracy_score([r.label for r in test], model.predict([r.path for r in test], reject=None))
            print(f"| {k} | {len(train):,} | {len(train) * k / 1e6:.1f}M | {solver} | {model.fitted_.head_report.C:g} | {seconds:.1f} | {accuracy:.2%} |", flush=True)


def fit(data: Path, run: Path, cache: Path, nproc: int, kind: str) -> dict:
    command = [sys.executable, "-m", "headstart", "-q", "fit", str(data), "-o", str(run), *FIT, *(["--nproc", str(nproc)] if nproc > 1 else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HEADSTART_CACHE": str(cache)})
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"bench_scale_images: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KB; the largest child so far
    metrics = json.loads((run / "metrics.json").read_text())
    row = {
        "nproc": nproc, "kind": kind, "wall": wall, "phases": metrics.get("seconds_by_phase", {}),
        "peak_gb": max(peak, before) / 2**20, "solver": metrics["classifier"]["solver"], "C": metrics["classifier"]["C"],
        "accuracy": metrics["evaluation"]["accuracy"], "balanced": metrics["evaluation"]["balanced_accuracy"],
        "images": metrics["n_train"] + metrics["evaluation"]["n_images"],
    }  # fmt: skip
    print(f"  {nproc} process(es), {kind}: {wall:.0f} s, accuracy {row['accuracy']:.2%}, phases {row['phases']}", flush=True)
    return row


if __name__ == "__main__":
    main()
