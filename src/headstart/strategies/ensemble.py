"""Networks that predict: the linear probe as one module, and a fine-tuned network averaged with it.

A fine-tuned network and the linear head it was warm-started from err on different images: the
head reads the pretrained codes, which fine-tuning on a few hundred images moves and can overfit.
Averaging their probabilities gained on every dev set where fine-tuning ran (bench_recipe.py,
docs/benchmarks.md), most where early stopping's small split picked a poor epoch. The ensemble's
output is the log of the mean probability, so a softmax over it gives that mean back: it plugs in
wherever a network's logits go (prediction, diagnostics, the ONNX export).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .linear import LinearHead


class LinearProbeNet(nn.Module):
    """Backbone codes, standardised, through a fitted linear head: the linear head as a network."""

    def __init__(self, codes_model: nn.Module, head: LinearHead):
        super().__init__()
        self.codes_model = codes_model
        self.register_buffer("mean", torch.as_tensor(head.mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(head.scale, dtype=torch.float32))
        self.linear = nn.Linear(head.coef.shape[1], head.coef.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(head.coef, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(head.intercept, dtype=torch.float32))

    @property
    def out_features(self) -> int:
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits_and_codes(x)[0]

    def logits_and_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.codes_model(x)
        return self.linear((codes - self.mean) / self.scale), codes


class ProbabilityAverage(nn.Module):
    """The mean of its members' softmax probabilities, as log-probabilities (the members see the
    same input tensor, so they must share their preprocessing)."""

    def __init__(self, *members: nn.Module):
        super().__init__()
        self.members = nn.ModuleList(members)

    @property
    def out_features(self) -> int:
        return self.members[0].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_log_probability([member(x) for member in self.members])

    def logits_and_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The averaged output and the first member's codes (the fine-tuned network's, whose
        detector scores them)."""
        first, codes = self.members[0].logits_and_codes(x)
        return mean_log_probability([first, *(member(x) for member in self.members[1:])]), codes


def averaged_logits(network_logits: np.ndarray, head_logits: np.ndarray) -> np.ndarray:
    """What the ensemble outputs, from its halves' logits computed apart (numpy arrays): the
    network's from the images, the linear head's from codes already at hand (cached, or out of
    fold), so that the pretrained backbone need not run again."""
    both = mean_log_probability([torch.as_tensor(network_logits), torch.as_tensor(head_logits)])
    return both.numpy().astype(np.float64)


def mean_log_probability(outputs: list[torch.Tensor]) -> torch.Tensor:
    """The log of the members' mean softmax probabilities: the ensemble's output (also what the
    pipeline computes for calibrating its detector, from out-of-fold logits)."""
    probabilities = torch.stack([output.float().softmax(dim=1) for output in outputs]).mean(0)
    return probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()
