"""The linear head at scale: time, peak memory and balanced accuracy on synthetic long-tailed codes.

    python benchmarks/bench_scale.py [--sizes 10000:500 100000:5000 1000000:5000] [--sklearn-up-to 10000]

Each size is CODES:CLASSES: class sizes fall Zipf-like over a 100:1 range around the mean (at
1,000,000 codes of 5,000 classes: 20 to 2,000 a class), 1,280 wide, with overlapping classes
(benchmarks/_synthetic.py). The codes are written once to a memory-mapped .npy file under
$TMPDIR/headstart-scale (reused by later runs), and each fit runs in a fresh process, so its
peak memory is its own. Printed per size: the mini-batch solver's time, peak memory (anonymous:
what the process allocated; the memory map's pages are the page cache's, listed apart) and
balanced accuracy on 10 fresh codes of every class, beside the nearest-class-mean classifier on
the same standardised codes, and scikit-learn's head where the size is at most --sklearn-up-to
and it finishes within --sklearn-timeout seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402

import _synthetic as synthetic  # noqa: E402
from _common import machine  # noqa: E402

STORE = Path(os.environ.get("TMPDIR", tempfile.gettempdir())) / "headstart-scale"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", nargs="*", default=["10000:500", "100000:5000", "1000000:5000"])
    parser.add_argument("--sklearn-up-to", type=int, default=10000, help="codes up to which scikit-learn's head runs too")
    parser.add_argument("--sklearn-timeout", type=float, default=600.0)
    parser.add_argument("--one", nargs=3, metavar=("CODES", "CLASSES", "SOLVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return fit_one(int(args.one[0]), int(args.one[1]), args.one[2])
    print(machine(), flush=True)
    rows = []
    for size in args.sizes:
        n, k = (int(part) for part in size.split(":"))
        print(f"\n{n:,} codes, {k:,} classes", flush=True)
        result = run_child(n, k, "minibatch", timeout=None)
        rows.append(result)
        if n <= args.sklearn_up_to:
            rows.append(run_child(n, k, "sklearn", timeout=args.sklearn_timeout) or {"codes": n, "classes": k, "solver": "sklearn", "seconds": None})
    print("\n| codes | classes | solver | C | seconds | peak memory, allocated (GB) | balanced accuracy | nearest class mean |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("seconds") is None:
            print(f"| {r['codes']:,} | {r['classes']:,} | {r['solver']} | | did not finish in {args.sklearn_timeout:.0f} s | | | |")
            continue
        print(
            f"| {r['codes']:,} | {r['classes']:,} | {r['solver']} | {r['C']:g} | {r['seconds']:.0f} | {r['peak_anon_gb']:.2f} "
            f"| {r['balanced_accuracy']:.2%} | {r['nearest_mean']:.2%} |"
        )


def run_child(n: int, k: int, solver: str, timeout: float | None) -> dict | None:
    command = [sys.executable, __file__, "--one", str(n), str(k), solver]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        print(f"  {solver:9s} did not finish within {timeout:.0f} s", flush=True)
        return None
    except subprocess.CalledProcessError as exc:
        sys.exit(f"bench_scale: the {solver} fit failed:\n{exc.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {solver:9s} {result['seconds']:7.1f} s  C={result['C']:g}  peak {result['peak_anon_gb']:.2f} GB allocated "
        f"(+{result['peak_file_gb']:.2f} GB of mapped codes)  balanced accuracy {result['balanced_accuracy']:.2%}  "
        f"(class means {result['nearest_mean']:.2%}; codes generated in {result['generate_seconds']:.0f} s)",
        flush=True,
    )
    return result


def fit_one(n: int, k: int, solver: str) -> None:
    from headstart.strategies.linear import fit_linear_head

    start = time.perf_counter()
    train, test = codes_for(n, k)
    generated = time.perf_counter() - start
    nearest = synthetic.nearest_mean_balanced_accuracy(train, test, k)
    with PeakMemory() as peak:
        start = time.perf_counter()
        head, report = fit_linear_head(train.codes, train.labels, solver=solver, device="cpu")
        seconds = time.perf_counter() - start
    accuracy = synthetic.balanced_accuracy(head.decision_function(test.codes).argmax(1), test.labels)
    print(json.dumps({
        "codes": n, "classes": k, "solver": solver, "C": report.C, "seconds": seconds, "balanced_accuracy": accuracy,
        "nearest_mean": nearest, "peak_anon_gb": peak.anon / 2**30, "peak_file_gb": peak.file / 2**30, "generate_seconds": generated,
    }))


def codes_for(n: int, k: int) -> tuple[synthetic.CodeSet, synthetic.CodeSet]:
    """The training codes (a memory map, written on first use) and a balanced test set."""
    mean = n / k
    counts = synthetic.class_counts(k, low=max(2, round(mean / 10)), high=round(mean * 10), mean=mean)
    STORE.mkdir(parents=True, exist_ok=True)
    path = STORE / f"codes-{counts.sum()}-{k}.npy"
    if path.exists():
        labels = np.random.default_rng(1).permutation(np.repeat(np.arange(k), counts))  # as long_tailed draws them
        train = synthetic.CodeSet(np.load(path, mmap_mode="r"), labels)
    else:
        partial = path.with_suffix(".partial.npy")
        train = synthetic.long_tailed(counts, path=partial)
        partial.rename(path)
    return train, synthetic.balanced_test(k)


class PeakMemory:
    """Peak resident memory of this process while the block runs, sampled every 50 ms:
    anonymous (allocated) and file-backed (pages of memory-mapped files) apart."""

    def __enter__(self):
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while True:
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
            self.anon = max(self.anon, int(fields["RssAnon"].split()[0]) * 1024)
            self.file = max(self.file, int(fields["RssFile"].split()[0]) * 1024)
            if self._stop.wait(0.05):
                return


if __name__ == "__main__":
    main()
