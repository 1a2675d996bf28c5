"""The search for images, reading back the list the ``--nproc`` launcher hands its processes, and
unpickling the list rank 0 broadcasts to the others under a torchrun started by hand (what
``broadcast_object_list`` does on every other rank), with Python's garbage collector paused while
they make a Path and a record per image (as headstart does) and with it running (as before).

    python benchmarks/bench_search.py FOLDER [--records 1000000] [--repeats 5]

Each measurement runs in a fresh process, the two ways alternating; printed: the median and the
range of each. ``--records``: how many made-up records the read-back is measured on.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import contextlib, gc, pickle, sys, time
from pathlib import Path
import headstart.data.dataset as found
from headstart._memory import collector_paused
if sys.argv[1] == "running":
    found.collector_paused = collector_paused = contextlib.nullcontext
if sys.argv[2] == "hand-over":  # the bytes broadcast_object_list sends, made here: no file is unpickled
    listed = found.Dataset.from_json(Path(sys.argv[3]).read_text())
    data = pickle.dumps(listed)
    del listed
    gc.collect()
started = time.perf_counter()
if sys.argv[2] == "search":
    found.load_dataset(sys.argv[3])
elif sys.argv[2] == "hand-over":
    with collector_paused():
        pickle.loads(data)
else:
    found.Dataset.from_json(Path(sys.argv[3]).read_text())
print(time.perf_counter() - started)
"""


def made_up_list(path: Path, n: int) -> None:
    from headstart.data.dataset import Dataset, ImageRecord

    records = [ImageRecord(Path(f"/data/train/c{i % 5000:04d}/{i:07d}.jpg"), f"c{i % 5000:04d}", "train") for i in range(n)]
    path.write_text(Dataset(Path("/data"), "splits", records, [], "/data").to_json())


def seconds(collector: str, what: str, source: Path) -> float:
    done = subprocess.run([sys.executable, "-c", MEASURE, collector, what, str(source)], capture_output=True, text=True, check=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        listed = Path(work) / "found.json"
        made_up_list(listed, args.records)
        for what, source in (("search", args.folder), ("read-back", listed), ("hand-over", listed)):
            times = {"running": [], "paused": []}
            for _ in range(args.repeats):
                for collector in times:
                    times[collector].append(seconds(collector, what, source))
            said = ", ".join(f"collector {c}: {statistics.median(t):.1f} s ({min(t):.1f}-{max(t):.1f})" for c, t in times.items())
            print(f"{what} of {source if what == 'search' else f'{args.records:,} records'}: {said}", flush=True)


if __name__ == "__main__":
    main()
