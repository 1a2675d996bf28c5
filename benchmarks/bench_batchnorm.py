"""BatchNorm during fine-tuning: stored (frozen) statistics or batch statistics; and the warm start's
floor on near-constant code scales. On data unlike ImageNet, where the choice matters most.

    python benchmarks/bench_batchnorm.py

400 training images of scikit-learn's digits at 96 px (15% of them for early stopping), 4 epochs,
no augmentation, head warm-started from the linear probe; accuracy on the 400-image test split.
Each setting: finetune_all and finetune_top.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import machine  # noqa: E402

import headstart.strategies.finetune as fine_tuning  # noqa: E402
from headstart.backbones import get_backbone  # noqa: E402
from headstart.data import load_dataset  # noqa: E402
from headstart.features import CodeExtractor  # noqa: E402
from headstart.strategies import fit_linear_head  # noqa: E402

SETTINGS = [("batch", 0.0), ("batch", 0.5), ("frozen", 0.0), ("frozen", 0.5)]  # (batchnorm, scale floor)


def main() -> None:
    print(machine(), flush=True)
    dataset = load_dataset(_datasets.digits(130))
    train, test = dataset.split("train"), dataset.split("test")
    classes = {c: i for i, c in enumerate(dataset.classes)}
    chosen = np.random.default_rng(0).choice(len(train), 400, replace=False)
    X = [train[i].path for i in chosen]
    y = np.array([classes[train[i].label] for i in chosen])
    X_test, y_test = [r.path for r in test], np.array([classes[r.label] for r in test])
    X_fit, X_stop, y_fit, y_stop = train_test_split(X, y, test_size=0.15, stratify=y, random_state=0)
    spec = get_backbone("mobilenet_v2")
    preprocessing = spec.preprocessing.with_size(96)
    extractor = CodeExtractor(spec, input_size=96)
    head, _ = fit_linear_head(extractor(X_fit).codes, y_fit)
    probe = np.mean(head.decision_function(extractor(X_test).codes).argmax(1) == y_test)
    print(f"linear probe {probe:.2%}; near-constant codes (scale < half the median): {(head.scale < 0.5 * np.median(head.scale)).sum()} of {len(head.scale)}")
    for batchnorm, floor in SETTINGS:
        fine_tuning.SCALE_FLOOR = floor
        for strategy in ("finetune_all", "finetune_top"):
            start = time.perf_counter()
            config = fine_tuning.FineTuneConfig(strategy=strategy, epochs=4, augmentation="none", batchnorm=batchnorm)
            result = fine_tuning.finetune(spec, X_fit, y_fit, X_stop, y_stop, config, n_classes=10, head_init=head, preprocessing=preprocessing)
            scores, _ = fine_tuning.network_scores(result.net, X_test, preprocessing)
            first = result.history.records[0]
            print(
                f"batchnorm {batchnorm:6s} floor {floor:.1f}  {strategy:12s} test {np.mean(scores.argmax(1) == y_test):.2%}  "
                f"first-epoch train loss {first.train_loss:7.3f}  {time.perf_counter() - start:4.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
