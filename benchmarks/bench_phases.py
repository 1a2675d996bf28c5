"""Where a cold ``headstart fit`` or ``advise`` spends its time: the seconds at which each announced
phase starts, from an empty cache, in this one process (imports included).

    python benchmarks/bench_phases.py fit ../shared/datasets/hymenoptera/train
    python benchmarks/bench_phases.py advise MRI-SAMPLE-FOLDER
    python benchmarks/bench_phases.py fit ../shared/datasets/hymenoptera --diagnostics --strategy finetune_top --time-budget 60

More arguments go to the command; a fit skips its diagnostics unless ``--diagnostics`` is among them.

A phase lasts until the next line. Run it alone: the 2-core CPU shared with another job doubles
every figure. The MRI sample of bench_first_contact.py is made with its ``mri_sample``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

START = time.perf_counter()

import headstart.progress as progress  # noqa: E402


def stamped(message: str, *args, **kwargs) -> None:
    print(f"{time.perf_counter() - START:7.2f} s  {message[:120]}", flush=True)


def main() -> None:
    command, data, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
    diagnostics = "--diagnostics" in extra
    extra = [argument for argument in extra if argument != "--diagnostics"]
    progress.announce = stamped  # every module calls progress.announce through the module
    from headstart.cli import main as headstart

    with tempfile.TemporaryDirectory(prefix="headstart-phases-") as cache:
        os.environ["HEADSTART_CACHE"] = cache
        stamped("started (headstart loads PyTorch lazily: its imports fall in the first phase)")
        arguments = [command, data, *extra] + (["-o", os.path.join(cache, "run")] + ([] if diagnostics else ["--no-diagnostics"]) if command == "fit" else [])
        headstart(["-q", *arguments])
        stamped("done")


if __name__ == "__main__":
    main()
