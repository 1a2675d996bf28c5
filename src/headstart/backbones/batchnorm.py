"""How far a dataset's activations sit from the statistics a network's BatchNorm layers stored.

Every BatchNorm layer keeps the running mean and variance of its inputs over the pretraining data
(ImageNet's), so comparing them with the same moments over new images measures how unlike the
pretraining data those images are, with no pretraining image at hand. The advisor uses it as a
similarity signal, and fine-tuning uses it to decide whether BatchNorm may normalise with batch
statistics (harmless when they match the stored ones, ruinous when they do not).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Distances above this mean data unlike the pretraining images. Set midway between photos (0.22
# hymenoptera, 0.32 oxford17flowers) and grey digits and clothing (0.61 to 1.05); docs/advisor.md.
FAR_FROM_PRETRAINING = 0.45


class BatchNormMoments:
    """Per-channel first and second moments of the inputs of every BatchNorm2d layer of ``model``,
    accumulated over the forward passes made while the hooks are attached."""

    def __init__(self, model: nn.Module):
        self.norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]
        self.sums = [0.0] * len(self.norms)
        self.squares = [0.0] * len(self.norms)
        self.counts = [0] * len(self.norms)
        self.handles = [norm.register_forward_pre_hook(self._hook(i)) for i, norm in enumerate(self.norms)]

    def _hook(self, i: int):
        def accumulate(_module, inputs):
            x = inputs[0].detach().float()
            self.sums[i] = self.sums[i] + x.sum(dim=(0, 2, 3)).double()
            self.squares[i] = self.squares[i] + (x * x).sum(dim=(0, 2, 3)).double()
            self.counts[i] += x.numel() // x.shape[1]

        return accumulate

    def distance(self) -> float | None:
        """Mean over layers of the mean over channels of |mu - mu_run| / sd_run + |log(sd / sd_run)|:
        how many stored standard deviations the channel means moved, plus how much the spreads
        changed, on a log scale. 0 for data exactly like the pretraining data; None without BatchNorm."""
        per_layer = []
        for norm, total, squares, count in zip(self.norms, self.sums, self.squares, self.counts):
            if not count:
                continue
            mean = (total / count).cpu()
            sd = (squares.cpu() / count - mean * mean).clamp_min(1e-12).sqrt()
            run_mean = norm.running_mean.detach().double().cpu()
            run_sd = (norm.running_var.detach().double().cpu() + norm.eps).sqrt()
            per_layer.append(float(((mean - run_mean).abs() / run_sd + (sd / run_sd).log().abs()).mean()))
        return float(np.mean(per_layer)) if per_layer else None

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()

    def __enter__(self) -> "BatchNormMoments":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@torch.no_grad()
def batchnorm_distance(model: nn.Module, batches) -> float | None:
    """:meth:`BatchNormMoments.distance` of ``model`` (run in eval mode) over image ``batches``."""
    was_training = model.training
    model.eval()
    try:
        with BatchNormMoments(model) as moments:
            for batch in batches:
                model(batch)
        return moments.distance()
    finally:
        model.train(was_training)
