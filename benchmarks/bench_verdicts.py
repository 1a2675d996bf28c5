"""The verdict on three runs whose answer is known:

    python benchmarks/bench_verdicts.py [--hymenoptera PATH] [--flowers PATH]

1. random labels: hymenoptera's training labels shuffled (in memory), linear head -> "not learning";
2. from scratch: the small CNN (``strategy="scratch"``, 64 px) trained on oxford17flowers with no
   augmentation, no dropout and 40 epochs, as a first attempt would be -> it memorises the
   training set: "overfitting";
3. the default fit on hymenoptera -> "healthy".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, train_and_held_out  # noqa: E402

from headstart import TransferClassifier, fit_folder  # noqa: E402
from headstart.diagnostics import diagnose  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SCRATCH = dict(epochs=40, dropout=0.0, augmentation="none", patience=1000, weight_decay=0.0, label_smoothing=0.0)


def show(name: str, report: dict, seconds: float) -> None:
    v = report["verdict"]
    print(f"\n{name} ({seconds:.0f} s): {v['label'].upper()}")
    print(f"  {v['headline']}")
    for line in v["evidence"]:
        print(f"  | {line}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hymenoptera", type=Path, default=SHARED / "hymenoptera")
    parser.add_argument("--flowers", type=Path, default=SHARED / "oxford17flowers")
    args = parser.parse_args()
    print(machine(), flush=True)

    _, X, y, X_test, y_test = train_and_held_out(args.hymenoptera)
    start = time.perf_counter()
    shuffled = np.random.default_rng(0).permutation(y)
    model = TransferClassifier(strategy="linear").fit(X, shuffled)
    report = diagnose(model, model.transform(X), shuffled, eval_scores=model.decision_function(X_test), eval_labels=y_test, eval_split="val", weights=False)
    show("random labels, hymenoptera", report, time.perf_counter() - start)

    _, X, y, X_test, y_test = train_and_held_out(args.flowers)
    start = time.perf_counter()
    model = TransferClassifier(strategy="scratch", finetune=SCRATCH).fit(X, y)
    report = diagnose(model, model.transform(X), y, eval_scores=model.decision_function(X_test), eval_labels=y_test, weights=False)
    show("from scratch, oxford17flowers", report, time.perf_counter() - start)

    start = time.perf_counter()
    _, summary = fit_folder(args.hymenoptera)
    show("default fit, hymenoptera", summary.diagnostics, time.perf_counter() - start)


if __name__ == "__main__":
    main()
