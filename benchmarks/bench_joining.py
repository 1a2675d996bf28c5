"""How to join two backbones' codes: plain concatenation, or each network's codes signed-square-rooted
and scaled to unit rows (headstart.features.extract.join_parts), against MobileNetV2 alone.

    python benchmarks/bench_joining.py [--only digits-15 ...]

The development rows (digits and Fashion-MNIST) chose the joining; the two photo sets are the
issue's targets, reported after the choice. Each cell: a linear head with C by 5-fold CV, scored
on the held-out split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import machine, train_and_held_out  # noqa: E402

from headstart.backbones import get_backbone  # noqa: E402
from headstart.features import CodeExtractor  # noqa: E402
from headstart.features.extract import join_parts  # noqa: E402
from headstart.strategies.linear import fit_linear_head  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
ROWS = {
    "digits-15": (lambda: _datasets.digits(15), 96),
    "digits-130": (lambda: _datasets.digits(130), 96),
    "fashion-15": (lambda: _datasets.fashion(15), 96),
    "fashion-200": (lambda: _datasets.fashion(200), 96),
    "digits-15@224": (lambda: _datasets.digits(15), 224),
    "fashion-15@224": (lambda: _datasets.fashion(15), 224),
    "hymenoptera (target)": (lambda: SHARED / "hymenoptera", 224),
    "oxford17flowers (target)": (lambda: SHARED / "oxford17flowers", 224),
}
VARIANTS = {
    "mobilenet_v2 alone": lambda m, e: m,
    "plain concatenation": lambda m, e: np.hstack([m, e]),
    "sqrt + unit rows": lambda m, e: join_parts([m, e]),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    print(machine(), flush=True)
    print("\n| set (held-out split) | " + " | ".join(VARIANTS) + " |\n|---|" + "---|" * len(VARIANTS))
    for name in args.only:
        locate, size = ROWS[name]
        _, X, y, X_test, y_test = train_and_held_out(locate())
        classes = {c: i for i, c in enumerate(sorted(set(y)))}
        y_fit, y_held = np.array([classes[c] for c in y]), np.array([classes[c] for c in y_test])
        codes = {}
        for backbone in ("mobilenet_v2", "efficientnet_lite0"):
            extractor = CodeExtractor(get_backbone(backbone), input_size=size)
            codes[backbone] = (extractor(X).codes, extractor(X_test).codes)
        cells = []
        for join in VARIANTS.values():
            train = join(codes["mobilenet_v2"][0], codes["efficientnet_lite0"][0])
            held = join(codes["mobilenet_v2"][1], codes["efficientnet_lite0"][1])
            head, _ = fit_linear_head(train, y_fit)
            cells.append(f"{np.mean(head.decision_function(held).argmax(1) == y_held):.2%}")
        print(f"| {name}, {size} px | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
