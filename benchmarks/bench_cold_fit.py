"""A cold fit (empty cache, the defaults) with this checkout and with an earlier revision, in one run.

    python benchmarks/bench_cold_fit.py ../shared/datasets/hymenoptera --baseline 584aa58 [--repeats 3]

Each fit runs in a fresh process with a fresh cache (so the advisor measures, the ONNX graphs are
exported and checked, every image is read), the two revisions alternating so that a slower
moment of the machine hits both alike. Prints every run, then the median and the fastest run of each, and their ratios (on a shared
machine the fastest run is the steadier estimate of what the code itself costs).
``--graphs-cached`` starts every cache with the backbone's exported ONNX graph (exported once,
first): the same cold fit without the ~25 s export, whose own spread hides smaller differences.
``--advisor-only`` times just ``headstart.advisor.advise`` on the training split, wall and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
start = time.perf_counter()
from headstart import fit_folder
_, summary = fit_folder(sys.argv[1], None, diagnostics=False)
print(json.dumps({"seconds": time.perf_counter() - start, "accuracy": summary.evaluation.accuracy,
                  "advisor": summary.plan["seconds"] if summary.plan else 0.0, "codes": summary.seconds_features,
                  "plan": summary.plan["explanation"][-1] if summary.plan else None, "backbone": summary.backbone}))
"""


ADVISOR_CHILD = """
import json, sys, time
import numpy as np
from headstart.advisor import advise
from headstart.backbones import get_backbone
from headstart.data import load_dataset
train = load_dataset(sys.argv[1]).split("train")
start, cpu = time.perf_counter(), time.process_time()
plan = advise(get_backbone("mobilenet_v2"), [r.path for r in train], [r.label for r in train])
print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "accuracy": float("nan"),
                  "advisor": plan.seconds, "codes": 0.0, "plan": plan.explanation[-1], "backbone": plan.backbone}))
"""


def export_revision(revision: str, into: Path) -> Path:
    """The revision's src/ folder, written under ``into`` (no worktree, nothing left in the repo)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def cold_fit(src: Path, data: str, graphs: Path | None = None, child: str = CHILD) -> dict:
    with tempfile.TemporaryDirectory(prefix="headstart-cold-") as cache:
        if graphs is not None:
            shutil.copytree(graphs, Path(cache) / "onnx")
        env = {**os.environ, "PYTHONPATH": str(src), "HEADSTART_CACHE": cache}
        done = subprocess.run([sys.executable, "-c", child, data], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--baseline", required=True, help="git revision to compare with (e.g. the commit before a change)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--graphs-cached", action="store_true", help="start every cache with the exported ONNX graphs")
    parser.add_argument("--advisor-only", action="store_true", help="time headstart.advisor.advise alone (wall and CPU)")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {args.baseline: [], "this checkout": []}
    with tempfile.TemporaryDirectory(prefix="headstart-baseline-") as tmp:
        sources = {args.baseline: export_revision(args.baseline, Path(tmp)), "this checkout": REPO / "src"}
        graphs = _exported_graphs(REPO / "src", args.data, Path(tmp)) if args.graphs_cached else None
        for repeat in range(args.repeats):
            for name, src in sources.items():
                result = cold_fit(src, args.data, graphs, ADVISOR_CHILD if args.advisor_only else CHILD)
                runs[name].append(result)
                cpu = f", CPU {result['cpu']:5.1f} s" if "cpu" in result else ""
                print(
                    f"run {repeat + 1}  {name:14s} {result['seconds']:7.1f} s (advisor {result['advisor']:5.1f} s, codes {result['codes']:5.1f} s{cpu})"
                    f"   accuracy {result['accuracy']:.2%}   {result['backbone']}",
                    flush=True,
                )
    medians = {name: statistics.median(r["seconds"] for r in results) for name, results in runs.items()}
    fastest = {name: min(r["seconds"] for r in results) for name, results in runs.items()}
    for name, results in runs.items():
        print(f"{name:14s} median {medians[name]:6.1f} s, fastest {fastest[name]:6.1f} s   accuracy {sorted({r['accuracy'] for r in results})}   plan: {results[0]['plan']}")
    ratio = lambda figures: figures["this checkout"] / figures[args.baseline]  # noqa: E731
    print(f"this checkout / {args.baseline}: {ratio(medians):.2f}x the time (medians), {ratio(fastest):.2f}x (fastest runs)")
    if all("cpu" in r for results in runs.values() for r in results):
        cpu = {name: statistics.median(r["cpu"] for r in results) for name, results in runs.items()}
        print(f"CPU time (medians): {cpu['this checkout']:.1f} s against {cpu[args.baseline]:.1f} s, {ratio(cpu):.2f}x")


def _exported_graphs(src: Path, data: str, into: Path) -> Path:
    """The ONNX graphs a fit exports (the same files for both revisions: same backbone and tap)."""
    cache = into / "graph-cache"
    env = {**os.environ, "PYTHONPATH": str(src), "HEADSTART_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", CHILD, data], env=env, capture_output=True, text=True, check=True)
    return cache / "onnx"


if __name__ == "__main__":
    main()
