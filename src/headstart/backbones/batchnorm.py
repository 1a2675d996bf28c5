"""How far a dataset's activations sit from the statistics a network's BatchNorm layers stored.

Every BatchNorm layer keeps the running mean and variance of its inputs over the pretraining data
(ImageNet's), so comparing them with the same moments over new images measures how unlike the
pretraining data those images are, with no pretraining image at hand: one of the advisor's two
similarity signals.
"""

from __future__ import annotations

import numpy as np
from torch import nn

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
