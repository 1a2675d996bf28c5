"""TensorBoard logs of a run (``--tensorboard``): scalars every epoch and weight histograms, written
with PyTorch's SummaryWriter under ``RUN/tensorboard``; view with ``tensorboard --logdir RUN``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn


class TensorBoardLog:
    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover - tensorboard is a dependency
            raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(str(log_dir))

    def __call__(self, record, net: nn.Module) -> None:
        """One fine-tuning epoch: losses, accuracies, learning rates and every weight's histogram."""
        step = record.epoch
        self.writer.add_scalar("loss/train", record.train_loss, step)
        self.writer.add_scalar("accuracy/train", record.train_accuracy, step)
        if record.val_loss is not None:
            self.writer.add_scalar("loss/validation", record.val_loss, step)
            self.writer.add_scalar("accuracy/validation", record.val_accuracy, step)
        for group, rate in record.learning_rates.items():
            self.writer.add_scalar(f"learning_rate/{group}", rate, step)
        self.histograms(net, step)
        self.writer.flush()

    def histograms(self, net: nn.Module, step: int) -> None:
        for name, parameter in net.named_parameters():
            if parameter.ndim >= 2:
                self.writer.add_histogram(f"weights/{name}", parameter.detach().float().cpu(), step)

    def final(self, scalars: dict[str, float], arrays: dict[str, np.ndarray], step: int) -> None:
        """The end of a run: its figures and the histograms of arrays such as a linear head."""
        for name, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(name, value, step)
        for name, values in arrays.items():
            self.writer.add_histogram(f"weights/{name}", np.asarray(values, dtype=np.float32), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
