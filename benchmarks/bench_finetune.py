"""Fine-tune on an image-folder dataset; print per-epoch history, accuracy and time per epoch.

    python benchmarks/bench_finetune.py ../shared/datasets/hymenoptera --strategy finetune_top [--precision bf16]

Early stopping watches a stratified 15% held out from train; accuracy is reported on the dataset's
own held-out split (val or test), which training never sees.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, peak_rss_mb  # noqa: E402

from headstart import TransferClassifier  # noqa: E402
from headstart.backbones import get_backbone  # noqa: E402
from headstart.data import load_dataset  # noqa: E402
from headstart.strategies import fit_linear_head  # noqa: E402
from headstart.strategies.finetune import FineTuneConfig, ImageDataset, finetune  # noqa: E402
from headstart.training import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--strategy", default="finetune_top")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--top-blocks", type=int, default=4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--augmentation", default="objects")
    parser.add_argument("--batchnorm", default="frozen", choices=("frozen", "batch"))
    parser.add_argument("--warm-start", action="store_true", help="start the head from the linear probe on the fit split")
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    classes = dataset.classes
    index = {c: i for i, c in enumerate(classes)}
    train = dataset.split("train")
    held_out = dataset.split(dataset.eval_split)
    paths = [r.path for r in train]
    labels = np.array([index[r.label] for r in train])
    fit_paths, stop_paths, fit_labels, stop_labels = train_test_split(paths, labels, test_size=0.15, stratify=labels, random_state=0)
    spec = get_backbone(args.backbone)
    config = FineTuneConfig(
        strategy=args.strategy, epochs=args.epochs, precision=args.precision, top_blocks=args.top_blocks,
        head_lr=args.head_lr, augmentation=args.augmentation, batchnorm=args.batchnorm, progress=False,
    )
    start = time.perf_counter()
    head = None
    if args.warm_start:
        codes = TransferClassifier(args.backbone).extract(fit_paths).codes
        head, _ = fit_linear_head(codes, fit_labels)
    result = finetune(spec, fit_paths, fit_labels, stop_paths, stop_labels, config, n_classes=len(classes), head_init=head)
    seconds = time.perf_counter() - start

    test_set = ImageDataset([r.path for r in held_out], [index[r.label] for r in held_out], spec.preprocessing.transform(), spec.preprocessing.resize)
    loader = torch.utils.data.DataLoader(test_set, batch_size=32)
    _, accuracy = evaluate(result.net, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"))
    print(f"dataset   {args.data}: fit {len(fit_paths)}, early-stopping split {len(stop_paths)}, {dataset.eval_split} {len(held_out)}; {machine()}")
    print(f"settings  {args.backbone} {args.strategy} (top {args.top_blocks} blocks), head lr {args.head_lr:g}, augmentation {args.augmentation}, batchnorm {args.batchnorm}, warm start {args.warm_start}, bf16 {result.bf16}, {result.imbalance.reason}")
    for r in result.history.records:
        print(f"  epoch {r.epoch:2d}  train loss {r.train_loss:.3f} acc {r.train_accuracy:.3f}   stop-split loss {r.val_loss:.3f} acc {r.val_accuracy:.3f}   {r.seconds:5.1f} s  ({r.trainable_parameters:,} trainable)")
    epoch_seconds = np.mean([r.seconds for r in result.history.records])
    print(f"result    {dataset.eval_split} accuracy {accuracy:.2%} with the weights of epoch {result.history.best_epoch}; {epoch_seconds:.1f} s per epoch; {seconds:.0f} s in all; peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
