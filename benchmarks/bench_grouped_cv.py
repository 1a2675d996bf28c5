"""Cross-validation that near duplicates cannot fool: the linear head's CV score, plain and with
near-duplicate groups kept in one fold, against its held-out split.

    python benchmarks/bench_grouped_cv.py ../shared/datasets/alzheimer_mri4 ../shared/datasets/oxford17flowers ../shared/datasets/hymenoptera --share 1.0 0.2

``--share`` subsamples each training class (seeded, keeping the imbalance) to that share; the
held-out split is used whole. A fair CV reads close to the held-out score; the chosen C and the
held-out score show whether grouping changed the model, not only its report.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from _common import machine, train_and_held_out
from headstart.backbones import get_backbone
from headstart.data import describe_groups, near_duplicate_groups
from headstart.features import CodeExtractor
from headstart.strategies import fit_linear_head


def subsample(y: np.ndarray, share: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), max(5, round((y == c).sum() * share)), replace=False) for c in np.unique(y)]))


def _scoring(report) -> str:
    return " (balanced)" if report.scoring == "balanced_accuracy" else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--share", type=float, nargs="+", default=[1.0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(machine())
    extract = CodeExtractor(get_backbone(args.backbone), "pre_logits")
    print("| set | train images | grouped (groups, largest) | C plain / grouped | CV plain | CV grouped | held-out accuracy plain / grouped | held-out balanced plain / grouped |")
    print("|---|---|---|---|---|---|---|---|")
    for data in args.datasets:
        _, X, y, X_test, y_test = train_and_held_out(data)
        train, test = extract(X, progress=True), extract(X_test, progress=True)
        classes, y_index = np.unique(y, return_inverse=True)
        test_ok = test.ok
        y_test_index = np.searchsorted(classes, y_test[test_ok])
        for share in args.share:
            rows = subsample(y_index, share)
            rows = rows[train.ok[rows]]
            groups = near_duplicate_groups([train.content_hashes[i] for i in rows], train.phashes[rows])
            found = describe_groups(groups)
            results = []
            for with_groups in (None, groups):
                head, report = fit_linear_head(train.codes[rows], y_index[rows], groups=with_groups)
                predicted = head.decision_function(test.codes[test_ok]).argmax(1)
                results.append((report, accuracy_score(y_test_index, predicted), balanced_accuracy_score(y_test_index, predicted)))
            (plain, acc0, bal0), (grouped, acc1, bal1) = results
            print(
                f"| {data.name} | {len(rows)} | {found['images']} ({found['groups']}, {found['largest']}) | {plain.C:g} / {grouped.C:g} "
                f"| {plain.cv_score:.1%}{_scoring(plain)} | {grouped.cv_score:.1%}{_scoring(grouped)} | {acc0:.1%} / {acc1:.1%} | {bal0:.1%} / {bal1:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
