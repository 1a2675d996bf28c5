"""Label-error detection: flip a share of the training labels, then see how many of the flipped
images the out-of-fold suspect ranking puts on top.

    python benchmarks/bench_label_noise.py ../shared/datasets/oxford17flowers [--noise 0.05] [--seeds 0 1 2]

The flips happen in memory (each flipped image gets a random other class); nothing is copied or
written. Codes come from the default backbone and tap (cached after the first run), the probe's C
from the same cross-validation ``fit`` runs. Prints, per seed, precision and recall of the top
2 x (number flipped) suspects, and the target: at least half the flipped images among them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from headstart import TransferClassifier  # noqa: E402
from headstart.data import load_dataset  # noqa: E402
from headstart.diagnostics import label_suspects, out_of_fold_probabilities  # noqa: E402
from headstart.strategies import fit_linear_head  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    print(machine(), flush=True)
    dataset = load_dataset(args.data)
    train = dataset.split("train")
    classes = dataset.classes
    y = np.array([classes.index(r.label) for r in train])
    codes = TransferClassifier(strategy="linear").transform([r.path for r in train])
    print(f"{args.data}: {len(y)} training images, {len(classes)} classes; flipping {args.noise:.0%} of the labels")
    recalls = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        flipped = rng.choice(len(y), int(round(args.noise * len(y))), replace=False)
        noisy = y.copy()
        noisy[flipped] = (y[flipped] + rng.integers(1, len(classes), len(flipped))) % len(classes)
        start = time.perf_counter()
        _, report = fit_linear_head(codes, noisy, random_state=seed)
        probabilities = out_of_fold_probabilities(codes, noisy, C=report.C, class_weight=report.class_weight, random_state=seed)
        ranked = [s["index"] for s in label_suspects(probabilities, noisy)]
        top = set(ranked[: 2 * len(flipped)])
        hits = len(top & set(flipped.tolist()))
        precision, recall = hits / max(len(top), 1), hits / len(flipped)
        recalls.append(recall)
        print(
            f"  seed {seed}: {len(flipped)} flipped; top {2 * len(flipped)} suspects hold {hits}: precision {precision:.0%}, recall {recall:.0%}; "
            f"{len(ranked)} suspects in all; C={report.C:g}; {time.perf_counter() - start:.1f} s"
        )
    print(f"mean recall in the top 2x: {np.mean(recalls):.0%} (target: at least 50%)")


if __name__ == "__main__":
    main()
