"""Why transfer beats training from scratch on small data, measured: test accuracy of

- the small CNN trained from scratch (``strategy="scratch"``: three conv blocks, 64 px, he_normal);
- a linear probe on the codes of a randomly initialised MobileNetV2, for two schemes
  (``mobilenet_v2@uniform_fan_in``, the classic U[-1/fan_in, 1/fan_in], and ``@he_normal``):
  how much do random filters give?
- the linear probe on the pretrained MobileNetV2's codes (``strategy="linear"``);
- with ``--finetune``, finetune_top and finetune_all with the library defaults (the best of them is
  the "best fine-tuning setting").

    python benchmarks/bench_scratch.py ../shared/datasets/oxford17flowers ../shared/datasets/hymenoptera [--finetune]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, train_and_held_out  # noqa: E402

from headstart import TransferClassifier  # noqa: E402

RANDOM_SCHEMES = ("uniform_fan_in", "he_normal")


def rows(finetune: bool) -> list[tuple[str, dict]]:
    out = [("from-scratch CNN (scratch_cnn, 64 px)", {"strategy": "scratch"})]
    out += [(f"linear probe, random features ({scheme})", {"backbone": f"mobilenet_v2@{scheme}", "strategy": "linear"}) for scheme in RANDOM_SCHEMES]
    out.append(("linear probe, pretrained features", {"strategy": "linear"}))
    if finetune:
        out += [(f"{s}, pretrained (defaults)", {"strategy": s}) for s in ("finetune_top", "finetune_all")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="+")
    parser.add_argument("--finetune", action="store_true", help="also fine-tune (finetune_top, finetune_all): minutes per dataset")
    args = parser.parse_args()
    print(machine(), flush=True)
    for data in args.data:
        dataset, X, y, X_test, y_test = train_and_held_out(data)
        chance = max(1 / len(dataset.classes), np.unique(y_test, return_counts=True)[1].max() / len(y_test))
        print(f"\n{data}: train {len(X)}, {dataset.eval_split} {len(X_test)}, chance {chance:.1%}", flush=True)
        for name, params in rows(args.finetune):
            start = time.perf_counter()
            model = TransferClassifier(**params).fit(X, y)
            accuracy = model.score(X_test, y_test)
            extra = ""
            if model.history_ is not None:
                best = model.history_.best_epoch or len(model.history_.records)
                extra = f"  (train {model.history_.records[best - 1].train_accuracy:.0%} at the kept epoch {best} of {len(model.history_.records)})"
            print(f"  {name:<46} {accuracy:7.2%}  {time.perf_counter() - start:5.0f} s{extra}", flush=True)


if __name__ == "__main__":
    main()
