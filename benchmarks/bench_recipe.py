"""Parts of a small-data fine-tuning recipe, each measured alone against today's defaults.

    python benchmarks/bench_recipe.py [--only hymenoptera flowers-20 mri-50 digits-15 fashion-15] [--strategy finetune_all finetune_top]

Each row fine-tunes once with the library defaults (the linear head's warm start, its 15% early-
stopping split, grouped by near duplicates) for the full schedule, keeping every epoch's weights.
Early stopping is deterministic given the run, so its choice (patience 4 on the split's loss) is
replayed on the records: "today" is exactly what ``fit`` returns. From the same run:

- ``best``: the epoch of the lowest split loss over the whole schedule (early stopping without patience);
- ``last``: the schedule's last epoch, no selection by the noisy split;
- ``swa``: the mean of the weights of the schedule's second half (BatchNorm statistics are frozen,
  so the averaged network needs no recalibration);
- each of those with horizontal-flip test-time augmentation (``+tta``: the mean of both logits'
  softmax), with the linear head's probabilities averaged in (``+head``), or both.

Balanced accuracy on the dataset's held-out split (MRI: a fixed 100 per class of its test split).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torchvision.transforms import functional as F

sys.path.insert(0, str(Path(__file__).parent))
import _datasets  # noqa: E402
from _common import SHARED, dev_set, machine  # noqa: E402

import headstart.pipeline as pipeline  # noqa: E402
from headstart import TransferClassifier  # noqa: E402
from headstart.strategies.linear import softmax  # noqa: E402
from headstart.strategies.finetune import network_scores  # noqa: E402

ROWS = {  # name: (folder, input size, training images per class (None: all), held-out images per class)
    "hymenoptera": (lambda: SHARED / "hymenoptera", None, None, None),
    "flowers-20": (lambda: SHARED / "oxford17flowers", None, None, 20),
    "mri-50": (lambda: SHARED / "alzheimer_mri4", None, 50, 100),
    "digits-15": (lambda: _datasets.digits(15), 96, None, None),
    "fashion-15": (lambda: _datasets.fashion(15), 96, None, None),
}
PATIENCE = 4  # the library default, replayed


class Flipped:
    """A preprocessing that mirrors every image first (for network_scores)."""

    def __init__(self, preprocessing):
        self.resize = preprocessing.resize
        self._transform = preprocessing.transform()

    def transform(self):
        return lambda image: self._transform(F.hflip(image))


def replay_early_stopping(records, patience=PATIENCE, min_delta=1e-4) -> int:
    """The epoch EarlyStopping would keep (1-based), as training.loop does it."""
    best, best_epoch, worse = np.inf, None, 0
    for r in records:
        if r.val_loss < best - min_delta:
            best, best_epoch, worse = r.val_loss, r.epoch, 0
        else:
            worse += 1
        if worse >= patience:
            break
    return best_epoch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--strategy", nargs="*", default=["finetune_all", "finetune_top"])
    args = parser.parse_args()
    print(machine(), flush=True)
    table = []
    for name in args.only:
        locate, input_size, train_per_class, test_per_class = ROWS[name]
        _, X, y, X_test, y_test = dev_set(locate, train_per_class, test_per_class)
        for strategy in args.strategy:
            row = run(name, strategy, X, y, X_test, y_test, input_size)
            table.append(row)
    variants = list(table[0]["scores"])
    print("\n| set | strategy | " + " | ".join(variants) + " | s |")
    print("|---|---|" + "---|" * (len(variants) + 1))
    for row in table:
        print(f"| {row['name']} | {row['strategy']} | " + " | ".join(f"{row['scores'][v]:.2%}" for v in variants) + f" | {row['seconds']:.0f} |")
    mean = {v: np.mean([row["scores"][v] - row["scores"]["today"] for row in table]) for v in variants}
    print("| mean change |  | " + " | ".join(f"{mean[v] * 100:+.2f}" for v in variants) + " |  |")


def run(name, strategy, X, y, X_test, y_test, input_size) -> dict:
    snapshots: dict[int, dict] = {}
    original = pipeline.finetune

    def keeping_snapshots(*a, on_epoch_end=None, **kw):
        def hook(record, net):
            snapshots[record.epoch] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            if on_epoch_end is not None:
                on_epoch_end(record, net)
        return original(*a, on_epoch_end=hook, **kw)

    pipeline.finetune = keeping_snapshots
    start = time.perf_counter()
    try:
        clf = TransferClassifier(strategy=strategy, input_size=input_size, finetune={"patience": 10_000})
        fit = pipeline.fit_model(clf.get_params(), X, y, others=X_test)
    finally:
        pipeline.finetune = original
    seconds = time.perf_counter() - start
    record = fit.record
    classes = list(record.classes)
    truth = np.array([classes.index(label) for label in y_test])
    test_codes = fit.codes.subset(np.arange(len(X), len(X) + len(X_test)))
    head_probs = softmax(pipeline.head_scores(record.head, test_codes))
    epochs = sorted(snapshots)
    kept = replay_early_stopping(record.history.records)
    second_half = epochs[len(epochs) // 2 :]
    best = min(record.history.records, key=lambda r: r.val_loss).epoch  # the whole schedule, no patience
    weights = {
        "today": snapshots[kept],
        "best": snapshots[best],
        "last": snapshots[epochs[-1]],
        "swa": {k: torch.stack([snapshots[e][k].float() for e in second_half]).mean(0).to(snapshots[kept][k].dtype) for k in snapshots[kept]},
    }
    net = record.network
    scores = {}
    for label, state in weights.items():
        net.load_state_dict(state)
        plain = softmax(network_scores(net, X_test, record.preprocessing)[0])
        flipped = softmax(network_scores(net, X_test, Flipped(record.preprocessing))[0])
        for suffix, probs in (("", plain), ("+tta", (plain + flipped) / 2)):
            scores[label + suffix] = balanced_accuracy_score(truth, probs.argmax(1))
            scores[label + suffix + "+head"] = balanced_accuracy_score(truth, (probs + head_probs).argmax(1))
    scores["head"] = balanced_accuracy_score(truth, head_probs.argmax(1))
    print(f"{name} {strategy}: train {len(X)}, held out {len(X_test)}, kept epoch {kept} (best of the schedule {best}) of {len(epochs)}; " + ", ".join(f"{k} {v:.2%}" for k, v in scores.items()) + f"; {seconds:.0f} s", flush=True)
    return {"name": name, "strategy": strategy, "scores": scores, "seconds": seconds}


if __name__ == "__main__":
    main()
