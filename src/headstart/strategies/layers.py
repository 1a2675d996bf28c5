"""Regularising layers for the head of a fine-tuned network, each a plain layer at evaluation."""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed
from .._seeds import derived_seed


class DropConnectLinear(nn.Linear):
    """A linear layer that, while training, drops each weight with probability ``p`` and rescales
    the rest (Wan et al. 2013, DropConnect); in evaluation it is a plain linear layer. Same
    parameters and state as ``nn.Linear``, so saved heads load either way."""

    def __init__(self, in_features: int, out_features: int, p: float = 0.0):
        super().__init__(in_features, out_features)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return super().forward(x)
        keep = torch.rand_like(self.weight) >= self.p
        return nn.functional.linear(x, self.weight * keep / (1.0 - self.p), self.bias)


class BatchDropout(nn.Module):
    """Dropout whose masks do not depend on how a step's batch is split across processes.

    Plain dropout draws each process's mask from its own generator, so two processes draw other
    masks than one process given the same images would, and a two-process fine-tuning drifts away
    from the one-process run. Here every process draws the mask of the whole step's batch from one
    generator seeded by (seed, epoch, step), and keeps the rows of its own share: rank r's images
    are every world-size-th of the step's, from r (how SharedShuffleSampler and
    ClassBalancedSampler deal them out). In evaluation it is the identity, as nn.Dropout is."""

    def __init__(self, p: float = 0.5, seed: int = 0):
        super().__init__()
        self.p, self.seed = p, seed
        self.epoch, self.step = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        world = distributed.current()
        generator = torch.Generator().manual_seed(derived_seed(self.seed, self.epoch, self.step))
        self.step += 1
        keep = torch.rand((x.shape[0] * world.size, *x.shape[1:]), generator=generator)[world.rank :: world.size] >= self.p
        return x * keep.to(x.device, x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class StochasticPool(nn.Module):
    """Global stochastic pooling (Zeiler & Fergus 2013): (N, C, H, W) -> (N, C).

    While training, each channel reports the activation at one location, drawn with probability
    proportional to the activation, so the head cannot lean on the same few locations every time.
    In evaluation it reports the expectation of that draw, the probability-weighted average
    sum(a^2) / sum(a), which lies between average and max pooling. Activations are ReLU'd first
    (the probabilities need them non-negative); a channel that is zero everywhere gives zero.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activations = torch.relu(x).flatten(2).float()  # (N, C, H*W); float for the sampling maths
        total = activations.sum(-1, keepdim=True)
        if not self.training:
            return ((activations * activations).sum(-1, keepdim=True) / total.clamp_min(1e-12)).squeeze(-1)
        locations = activations.shape[-1]
        probabilities = torch.where(total > 0, activations / total.clamp_min(1e-12), 1.0 / locations)
        drawn = torch.multinomial(probabilities.reshape(-1, locations), 1).reshape(*activations.shape[:2], 1)
        return activations.gather(-1, drawn).squeeze(-1)
