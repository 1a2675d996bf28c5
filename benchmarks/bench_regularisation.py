"""Sweep the fine-tuning regularisers one at a time on the shared datasets; print test accuracy.

    python benchmarks/bench_regularisation.py ../shared/datasets/hymenoptera ../shared/datasets/oxford17flowers

Each setting changes one regulariser from FineTuneConfig's defaults and fits through the
estimator (``finetune_top``, head warm-started from the linear probe, early stopping on 15% of
train), exactly as ``headstart fit --strategy finetune_top`` would. Accuracy is on the dataset's own
held-out split. One seed per setting: differences under about 1.5 points (flowers, 1,020 test
images) or 3 points (hymenoptera, 153) are within sampling noise of the test split alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, train_and_held_out  # noqa: E402

from headstart import TransferClassifier  # noqa: E402

SETTINGS = {
    "defaults": {},
    "dropout 0": {"dropout": 0.0},
    "dropout 0.5": {"dropout": 0.5},
    "drop_connect 0.3": {"drop_connect": 0.3},
    "label_smoothing 0": {"label_smoothing": 0.0},
    "weight_decay 0.01": {"weight_decay": 1e-2},
    "stochastic pooling": {"pooling": "stochastic"},
    "mixup 0.2": {"mixup": 0.2},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="+")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--backbone", default="mobilenet_v2")
    args = parser.parse_args()
    print(machine(), flush=True)
    for root in args.data:
        dataset, X, y, X_test, y_test = train_and_held_out(root)
        print(f"\n{Path(root).name}: train {len(X)}, {dataset.eval_split} {len(X_test)}", flush=True)
        probe = TransferClassifier(args.backbone, strategy="linear").fit(X, y)
        print(f"  {'linear probe':20s} {probe.score(X_test, y_test):7.2%}", flush=True)
        for name in args.settings:
            start = time.perf_counter()
            model = TransferClassifier(args.backbone, strategy="finetune_top", finetune=SETTINGS[name]).fit(X, y)
            predicted = model.predict(X_test, reject=None)
            history = model.history_
            print(
                f"  {name:20s} {np.mean(predicted == y_test):7.2%}  balanced {balanced_accuracy_score(y_test, predicted):7.2%}  "
                f"best epoch {history.best_epoch:2d}/{len(history.records):2d}  {time.perf_counter() - start:4.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
