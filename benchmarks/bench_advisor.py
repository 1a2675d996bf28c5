"""Does strategy="auto" choose well? Regret against every alternative, on the same split.

    python benchmarks/bench_advisor.py [--only hymenoptera digits-15 ...] [--auto-only | --alternatives finetune_all ...]

Rows: the shared datasets (their own splits; alzheimer_mri4's test split capped at 100 images per
class to fit the CPU), seeded per-class subsamples of their training splits at 15 and 50 images per
class, scikit-learn's digits at 15, 50 and 130 training images per class (all it has after a
40-per-class test split) and Fashion-MNIST at 15, 50 and 200 (Debian package
dataset-fashion-mnist), the grey sets at 96 px input. For each, auto is fitted in full (advisor
included), then every alternative: linear on the top tap, linear on the sweep's best other tap (or
tap concatenation), finetune_top and finetune_all, each with the library defaults. Scores are
balanced accuracy on the held-out split (alzheimer_mri4 is 49:1 imbalanced); every fit's time is
printed. Regret = best alternative - auto, in points (negative: auto beat every fixed recipe).
``--auto-only`` fits auto alone (its plan and score), to set beside a full run's alternatives after
a change that touches only the advisor or the fitting path; ``--alternatives`` fits auto and the
named alternatives only (after a change to one strategy's defaults; the regret then needs the other
columns from a full run). ``--partner``: on every row where the advisor tried the second embedded
backbone, its cross-validated gain and the noise margin it had to beat, beside the held-out
difference the join makes (the side auto did not take is fitted too).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import SHARED, dev_set, machine  # noqa: E402

from headstart import TransferClassifier  # noqa: E402
from headstart.advisor.plan import MIN_GAIN  # noqa: E402
from headstart.backbones import PRE_LOGITS  # noqa: E402

MRI = lambda: SHARED / "alzheimer_mri4"  # noqa: E731
ROWS = {  # name: (folder, input size, training images per class (None: all), held-out images per class)
    "hymenoptera": (lambda: SHARED / "hymenoptera", None, None, None),
    "hymenoptera-15": (lambda: SHARED / "hymenoptera", None, 15, None),
    "hymenoptera-50": (lambda: SHARED / "hymenoptera", None, 50, None),
    "oxford17flowers": (lambda: SHARED / "oxford17flowers", None, None, None),
    "oxford17flowers-15": (lambda: SHARED / "oxford17flowers", None, 15, None),
    "alzheimer_mri4-15": (MRI, None, 15, 100),
    "alzheimer_mri4-50": (MRI, None, 50, 100),
    "digits-15": (lambda: _datasets.digits(15), 96, None, None),
    "digits-50": (lambda: _datasets.digits(50), 96, None, None),
    "digits-130": (lambda: _datasets.digits(130), 96, None, None),
    "fashion-15": (lambda: _datasets.fashion(15), 96, None, None),
    "fashion-50": (lambda: _datasets.fashion(50), 96, None, None),
    "fashion-200": (lambda: _datasets.fashion(200), 96, None, None),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--time-budget", type=float, default=None)
    parser.add_argument("--auto-only", action="store_true", help="fit auto alone: its plan and score, no alternatives")
    parser.add_argument("--alternatives", nargs="*", default=None, choices=["linear", "linear_other", "finetune_top", "finetune_all"],
                        help="fit auto and only these alternatives (default: all four)")
    parser.add_argument("--partner", action="store_true", help="with --auto-only: the second backbone's check against the held-out split")
    args = parser.parse_args()
    print(machine(), flush=True)
    table = []
    for name in args.only:
        locate, input_size, train_per_class, test_per_class = ROWS[name]
        dataset, X, y, X_test, y_test = dev_set(locate, train_per_class, test_per_class)
        print(f"\n{name}: train {len(X)}, {dataset.eval_split} {len(X_test)}", flush=True)

        start = time.perf_counter()
        # A fresh cache: the advisor measures (a plan cached by an earlier run would be reused).
        with tempfile.TemporaryDirectory(prefix="headstart-advisor-bench-") as cache:
            auto = TransferClassifier(strategy="auto", input_size=input_size, time_budget=args.time_budget, cache_dir=cache).fit(X, y)
            auto_seconds = time.perf_counter() - start
            auto_accuracy = balanced_accuracy_score(y_test, auto.predict(X_test, reject=None))
        plan = auto.plan_
        for line in plan.explanation:
            print(f"  | {line}", flush=True)
        print(f"  auto -> {plan.describe()} at {auto.fitted_.input_size} px: {auto_accuracy:.2%}, fit {auto_seconds:.0f} s (advisor {plan.seconds:.0f} s)", flush=True)

        if args.partner:
            partner_row(auto, auto_accuracy, X, y, X_test, y_test, input_size)
        if args.auto_only:
            table.append((name, plan.case, plan.describe(), auto_accuracy, auto_seconds, "-", float("nan"), float("nan")))
            continue
        other_taps = [s for s in plan.measurements.sweep if s.tap != PRE_LOGITS]
        best_other = max(other_taps, key=lambda s: s.cv_accuracy).tap
        alternatives = {
            f"linear {PRE_LOGITS}": ("linear", PRE_LOGITS, "linear"),
            f"linear {best_other}": ("linear", best_other, "linear_other"),
            "finetune_top": ("finetune_top", PRE_LOGITS, "finetune_top"),
            "finetune_all": ("finetune_all", PRE_LOGITS, "finetune_all"),
        }
        scores = {}
        for label, (strategy, tap, key) in alternatives.items():
            if args.alternatives is not None and key not in args.alternatives:
                continue
            start = time.perf_counter()
            model = TransferClassifier(strategy=strategy, tap=tap if strategy == "linear" else None, input_size=input_size).fit(X, y)
            seconds = time.perf_counter() - start
            scores[label] = balanced_accuracy_score(y_test, model.predict(X_test, reject=None))
            print(f"  {label:32s} {scores[label]:7.2%}  fit {seconds:5.0f} s", flush=True)
        best = max(scores, key=scores.get)
        regret = (scores[best] - auto_accuracy) * 100
        table.append((name, plan.case, plan.describe(), auto_accuracy, auto_seconds, best, scores[best], regret))
        print(f"  regret {regret:+.2f} points (best alternative: {best})", flush=True)

    print("\n| dataset | case | auto's plan | auto (balanced) | auto's fit | best alternative | regret (points) |\n|---|---|---|---|---|---|---|")
    for name, case, described, accuracy, seconds, best, best_score, regret in table:
        print(f"| {name} | {case} | {described} | {accuracy:.2%} | {seconds:.0f} s | {best} {best_score:.2%} | {regret:+.2f} |")


def partner_row(auto, auto_accuracy, X, y, X_test, y_test, input_size) -> None:
    """The second backbone's check (its CV gain over the first alone, and the margin it had to beat)
    against the held-out split: balanced accuracy joined and alone, the side auto did not take
    fitted here."""
    plan = auto.plan_
    joined = next((a for a in plan.alternatives if a.tap.split(" ")[0].count("+") == 1 and " " in a.tap), None)
    if joined is None or plan.strategy != "linear":
        print("  partner: not tried", flush=True)
        return
    backbones, taps = joined.tap.split(" ")
    first = backbones.split("+")[0]
    alone_tap = taps.split("+")[0]
    alone = next(a for a in plan.alternatives if a.tap == alone_tap)
    margin = max(joined.noise, MIN_GAIN / 2)  # as the advisor's _partner_check
    if plan.backbone == backbones:
        joined_accuracy = auto_accuracy
        other = TransferClassifier(backbone=first, tap=alone_tap, strategy="linear", input_size=input_size).fit(X, y)
        alone_accuracy = balanced_accuracy_score(y_test, other.predict(X_test, reject=None))
    else:
        alone_accuracy = auto_accuracy
        other = TransferClassifier(backbone=backbones, tap=taps, strategy="linear", input_size=input_size).fit(X, y)
        joined_accuracy = balanced_accuracy_score(y_test, other.predict(X_test, reject=None))
    print(
        f"  partner: {joined.tap} CV {joined.accuracy:.1%} against {alone_tap} alone {alone.accuracy:.1%}: gain {(joined.accuracy - alone.accuracy) * 100:+.1f}, "
        f"margin {margin * 100:.1f}; held out joined {joined_accuracy:.2%}, alone {alone_accuracy:.2%}: {(joined_accuracy - alone_accuracy) * 100:+.2f} points",
        flush=True,
    )


if __name__ == "__main__":
    main()
