"""One process against two (torchrun, gloo) on the same data, seed and global batch.

    python benchmarks/bench_distributed.py ../shared/datasets/hymenoptera [--strategies linear finetune_top]

For each strategy, `headstart fit DATA --strategy S` runs once on one process and once with
`--nproc 2`, each into a fresh run directory with an empty feature cache; printed: the held-out
accuracy (and the difference in images), the wall time and what metrics.json says of the run.
Then a two-process fine-tuning run has its rank 1 killed once training started, and the time
until the whole job has ended (and its exit code) is printed.

    python benchmarks/bench_distributed.py DATA --search [--repeats 3]

prints instead how long `headstart fit DATA` takes until its fit has the images (rank 0 says how
many it found), on one process, with `--nproc 2` and under torchrun started by hand with 2
processes: the search for images, and under `--nproc` the launcher's too. `--strict` instead times `fit --strict`'s decoding of every image, from its
announcement to the next line. Run it with `PYTHONPATH=OTHER/src` for another revision's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("--strategies", nargs="*", default=["linear", "finetune_top"])
    parser.add_argument("--search", action="store_true", help="time only the search for images")
    parser.add_argument("--strict", action="store_true", help="time only --strict's decoding of every image")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="headstart-distributed-") as work:
        work = Path(work)
        if args.search or args.strict:
            what = "--strict decoded every image in" if args.strict else "the fit has its images after"
            for nproc, how in ((1, "1 process"), (2, "--nproc 2"), (-2, "torchrun by hand, 2 processes")):
                seconds = sorted(time_to_found(args.data, work / f"search-{nproc}-{i}", nproc, args.strict) for i in range(args.repeats))
                print(f"{args.data.name}: {how}, {what} {seconds[len(seconds) // 2]:.1f} s (median of {args.repeats}: {', '.join(f'{t:.1f}' for t in seconds)})", flush=True)
            return
        for strategy in args.strategies:
            results = [fit(args.data, work / f"{strategy}-{n}", strategy, n) for n in (1, 2)]
            (one, one_seconds), (two, two_seconds) = results
            images = round(abs(one["accuracy"] - two["accuracy"]) * one["n_images"])
            print(
                f"{args.data.name} {strategy:13s} 1 process {one['accuracy']:.2%} in {one_seconds:.0f} s | "
                f"2 processes {two['accuracy']:.2%} in {two_seconds:.0f} s ({two['run']}) | {images} image(s) apart",
                flush=True,
            )
        kill_one_rank(args.data, work / "killed")


def fit(data: Path, run: Path, strategy: str, nproc: int) -> tuple[dict, float]:
    command = [sys.executable, "-m", "headstart", "-q", "fit", str(data), "-o", str(run), "--strategy", strategy, "--no-diagnostics"]
    command += ["--nproc", str(nproc)] if nproc > 1 else []
    env = {**os.environ, "HEADSTART_CACHE": str(run) + "-cache"}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    metrics = json.loads((run / "metrics.json").read_text())
    return metrics["evaluation"] | {"run": metrics["run"]}, time.perf_counter() - start


def time_to_found(data: Path, run: Path, nproc: int, strict: bool = False) -> float:
    """Seconds until rank 0's fit announces the images found (``strict``: from its announcement of
    --strict's decoding to the next announcement); the job is then stopped. A negative ``nproc``:
    that many processes under torchrun started by hand, not by ``--nproc``."""
    by_hand = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={-nproc}"] if nproc < 0 else [sys.executable]
    command = [*by_hand, "-m", "headstart", "--progress", "fit", str(data), "-o", str(run), "--strategy", "linear", "--backbone", "tiny", "--no-diagnostics"]
    command += ["--nproc", str(nproc)] if nproc > 1 else []
    command += ["--strict"] if strict else []
    start = None if strict else time.perf_counter()
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in job.stderr:  # the bars end in carriage returns; an announcement ends its line
            said = line.rsplit("\r", 1)[-1]
            if strict and said.startswith("--strict: decoding"):
                start = time.perf_counter()
            elif strict and start is not None and said.strip() and not said.startswith("checking"):
                return time.perf_counter() - start
            elif not strict and line.startswith("found ") and " images of " in line:
                return time.perf_counter() - start
        sys.exit(f"the fit ended without saying what it found (exit {job.wait()})")
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def kill_one_rank(data: Path, run: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "headstart", "-q", "fit", str(data),
        "-o", str(run), "--strategy", "finetune_top", "--epochs", "50", "--no-diagnostics",
    ]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "HEADSTART_CACHE": str(run) + "-cache"})
    while not (run / "checkpoints").exists():
        if job.poll() is not None:
            sys.exit(f"the job ended before training started:\n{job.stderr.read()[-2000:]}")
        time.sleep(0.5)
    children = [int(p) for p in Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()]
    victim = next(pid for pid in children if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{pid}/environ").read_bytes())
    os.kill(victim, signal.SIGKILL)
    start = time.perf_counter()
    _, err = job.communicate(timeout=300)
    last = [line for line in err.splitlines() if line.strip()][-1:] or ["(nothing)"]
    print(f"rank 1 killed after training began: the job ended in {time.perf_counter() - start:.1f} s, exit {job.returncode}; last line: {last[0][:160]}")


if __name__ == "__main__":
    main()
