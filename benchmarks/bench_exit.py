"""What a command costs after its last line: Python's shutdown against leaving at once.

    python benchmarks/bench_exit.py [DATA] [--repeats 5]

Fits a linear model on DATA (default: the shared hymenoptera set) into a temporary run, then times
`headstart predict RUN IMAGE` in fresh processes, two ways alternating: ending as a Python program
does (``sys.exit(main(...))``: the interpreter's shutdown tears down every module PyTorch loaded)
and as the ``headstart`` command does (``headstart.cli.run``: out at once after flushing). Printed:
each way's median and range of wall seconds, and how far the command's last line comes before the
process ends, each way.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import SHARED

SHUTDOWN = "import sys; from headstart.cli import main; sys.exit(main())"  # how the command ended before
AT_ONCE = "from headstart.cli import run; run()"


def timed(program: str, argv: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds of the process, and seconds from its last line of output to its end."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", program, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    last_line = started
    for _ in process.stdout:
        last_line = time.perf_counter()
    process.wait()
    ended = time.perf_counter()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {process.returncode}")
    return ended - started, ended - last_line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path, nargs="?", default=SHARED / "hymenoptera")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="headstart-exit-") as work:
        env = {**os.environ, "HEADSTART_CACHE": str(Path(work) / "cache")}
        run = Path(work) / "run"
        subprocess.run([sys.executable, "-m", "headstart", "-q", "fit", str(args.data), "-o", str(run), "--strategy", "linear", "--no-diagnostics"], check=True, env=env, stdout=subprocess.DEVNULL)
        image = next(p for p in sorted(args.data.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        argv = ["predict", str(run), str(image)]
        times: dict[str, list[tuple[float, float]]] = {"Python's shutdown": [], "out at once (headstart.cli.run)": []}
        for _ in range(args.repeats):
            times["Python's shutdown"].append(timed(SHUTDOWN, argv, env))
            times["out at once (headstart.cli.run)"].append(timed(AT_ONCE, argv, env))
    print(f"headstart predict RUN {image.name} (a linear model of {args.data.name}), {args.repeats} fresh processes each way, alternating:")
    for way, measured in times.items():
        wall = [w for w, _ in measured]
        after = [a for _, a in measured]
        print(f"  {way:32s} {statistics.median(wall):.2f} s (range {min(wall):.2f}-{max(wall):.2f}); after its last line {statistics.median(after):.2f} s")


if __name__ == "__main__":
    main()
