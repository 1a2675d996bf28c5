"""Which linear head should a fine-tuned network be averaged with: the top codes' or the sweep's tap?

    python benchmarks/bench_ensemble_head.py [--only digits-15 fashion-50 ...]

On the dev rows of data unlike ImageNet (bench_advisor.py's rows, the same splits), one
``finetune_all`` network with the library defaults (its probabilities alone: ``ensemble`` off) is
averaged with two linear heads fitted on the whole training split: on the top codes (what the
ensemble read until 2026-12-06) and on the tap the advisor's layer sweep chose for the row in the
regret run of docs/advisor.md (the tap its trial compares fine-tuning with, and since 2026-12-06 the
one a fine-tuning plan averages the network with). Balanced accuracy on the held-out split.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).parent))
from _common import dev_set, machine  # noqa: E402
from bench_advisor import ROWS  # noqa: E402

from headstart import TransferClassifier  # noqa: E402

SWEEP_TAPS = {  # row: MobileNetV2's tap the sweep chose (docs/advisor.md, the regret run of 2026-12-05)
    "alzheimer_mri4-15": "features.10",
    "alzheimer_mri4-50": "features.17",
    "digits-15": "features.13",
    "digits-50": "features.16",
    "digits-130": "features.16",
    "fashion-15": "features.16",
    "fashion-50": "features.16",
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(SWEEP_TAPS), choices=list(SWEEP_TAPS))
    args = parser.parse_args()
    print(machine(), flush=True)
    table = []
    for name in args.only:
        locate, input_size, train_per_class, test_per_class = ROWS[name]
        _, X, y, X_test, y_test = dev_set(locate, train_per_class, test_per_class)
        start = time.perf_counter()
        network = TransferClassifier(strategy="finetune_all", input_size=input_size, finetune={"ensemble": False}).fit(X, y)
        seconds = time.perf_counter() - start
        top = TransferClassifier(strategy="linear", input_size=input_size).fit(X, y)
        swept = TransferClassifier(strategy="linear", tap=SWEEP_TAPS[name], input_size=input_size).fit(X, y)
        p_net, p_top, p_tap = (model.predict_proba(X_test) for model in (network, top, swept))
        score = lambda p: balanced_accuracy_score(y_test, network.classes_[p.argmax(1)])  # noqa: E731
        row = (name, SWEEP_TAPS[name], score(p_top), score(p_tap), score(p_net), score((p_net + p_top) / 2), score((p_net + p_tap) / 2), seconds)
        table.append(row)
        print(f"{name}: top {row[2]:.2%}, {row[1]} {row[3]:.2%}, network {row[4]:.2%}, +top {row[5]:.2%}, +{row[1]} {row[6]:.2%} (fine-tuning {seconds:.0f} s)", flush=True)
    print("\n| row | sweep's tap | linear, top | linear, sweep's tap | network alone | network + top head | network + sweep's head | change |\n|---|---|---|---|---|---|---|---|")
    for name, tap, top, swept, net, with_top, with_tap, _ in table:
        print(f"| {name} | {tap} | {top:.2%} | {swept:.2%} | {net:.2%} | {with_top:.2%} | {with_tap:.2%} | {(with_tap - with_top) * 100:+.2f} |")
    print(f"mean change {np.mean([(r[6] - r[5]) * 100 for r in table]):+.2f} points over {len(table)} rows")


if __name__ == "__main__":
    main()
