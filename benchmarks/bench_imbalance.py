"""Imbalance handling on an artificially skewed training set: on versus off, balanced accuracy.

    python benchmarks/bench_imbalance.py ../shared/datasets/oxford17flowers [--minority 6 --keep 3] [--finetune]

Keeps only ``keep`` training images in ``minority`` classes (chosen with a fixed seed, as are the
images kept), fits with imbalance handling on "auto" and with it off, and prints balanced and plain
accuracy on the untouched test split. Linear probe by default; ``--finetune`` also runs the
fine-tuning engine (``finetune_top``) both ways.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split

from headstart import TransferClassifier
from headstart.backbones import get_backbone
from headstart.data import load_dataset
from headstart.strategies.finetune import FineTuneConfig, ImageDataset, finetune


def skewed_train(dataset, minority: int, keep: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    classes = dataset.classes
    small = set(rng.choice(len(classes), minority, replace=False).tolist())
    records = []
    for index, label in enumerate(classes):
        members = [r for r in dataset.split("train") if r.label == label]
        if index in small:
            members = [members[i] for i in sorted(rng.choice(len(members), keep, replace=False))]
        records += members
    return records, sorted(classes[i] for i in small)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--minority", type=int, default=6)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--finetune", action="store_true")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    train, small = skewed_train(dataset, args.minority, args.keep)
    test = dataset.split(dataset.eval_split)
    X, y = [r.path for r in train], np.array([r.label for r in train])
    X_test, y_test = [r.path for r in test], np.array([r.label for r in test])
    counts = {c: int((y == c).sum()) for c in dataset.classes}
    print(f"train {len(train)} images; {len(small)} classes cut to {args.keep}: {', '.join(small)}; ratio {max(counts.values())}:{min(counts.values())}")

    for name, weight in (("linear, imbalance auto", "auto"), ("linear, imbalance off ", None)):
        model = TransferClassifier(strategy="linear", class_weight=weight).fit(X, y)
        predicted = model.predict(X_test, reject=None)
        minority = np.isin(y_test, small)
        print(
            f"{name}  balanced accuracy {balanced_accuracy_score(y_test, predicted):.2%}  accuracy {np.mean(predicted == y_test):.2%}  "
            f"minority-class recall {np.mean(predicted[minority] == y_test[minority]):.2%}  (class weight {model.fit_report_.class_weight})"
        )
    if args.finetune:
        index = {c: i for i, c in enumerate(dataset.classes)}
        labels = np.array([index[v] for v in y])
        fit_X, stop_X, fit_y, stop_y = train_test_split(X, labels, test_size=0.15, stratify=labels, random_state=0)
        spec = get_backbone("mobilenet_v2")
        test_set = ImageDataset(X_test, [index[v] for v in y_test], spec.preprocessing.transform(), spec.preprocessing.resize)
        for name, handling in (("finetune, imbalance auto", "auto"), ("finetune, imbalance off ", "none")):
            result = finetune(spec, fit_X, fit_y, stop_X, stop_y, FineTuneConfig(imbalance=handling), n_classes=len(index))
            with torch.no_grad():
                predicted = np.concatenate([result.net(x).argmax(1).numpy() for x, _ in torch.utils.data.DataLoader(test_set, batch_size=64)])
            truth = np.array([index[v] for v in y_test])
            print(f"{name}  balanced accuracy {balanced_accuracy_score(truth, predicted):.2%}  ({result.imbalance.reason})")


if __name__ == "__main__":
    main()
