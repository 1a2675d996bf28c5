"""The learning-rate range test (Smith 2017; fastai's ``lr_find``): raise the rate exponentially
over a few hundred mini-batches, watch the loss, and suggest a rate where it still falls fastest.

The network and optimizer are restored afterwards: the test costs time, not a trained model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .loop import autocast


@dataclass
class RangeTest:
    learning_rates: list[float]  # of the fastest group (the head); the others keep their ratio to it
    losses: list[float]  # smoothed
    suggestion: float  # head learning rate to use

    def to_dict(self) -> dict:
        return {"learning_rates": self.learning_rates, "losses": self.losses, "suggestion": self.suggestion}


def lr_range_test(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader,
    criterion: nn.Module,
    *,
    start: float = 1e-6,
    end: float = 1.0,
    steps: int = 100,
    device: torch.device = torch.device("cpu"),
    bf16: bool = False,
    smoothing: float = 0.9,
) -> RangeTest:
    """Run the range test on ``loader`` (cycled as needed). Rates are those of the group with the
    highest rate (the new head); the other groups keep their ratio to it."""
    net_state = copy.deepcopy(net.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    top = max(group["lr"] for group in optimizer.param_groups)
    ratios = [group["lr"] / top for group in optimizer.param_groups]
    growth = (end / start) ** (1 / max(1, steps - 1))
    rates, losses = [], []
    average, best = 0.0, math.inf
    batches = iter(loader)
    net.train()
    try:
        for step in range(steps):
            try:
                images, labels = next(batches)
            except StopIteration:
                batches = iter(loader)
                images, labels = next(batches)
            rate = start * growth**step
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = rate * ratio
            images, labels = images.to(device), labels.to(device)
            with autocast(device, bf16):
                logits = net(images)
            loss = criterion(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            average = smoothing * average + (1 - smoothing) * float(loss.detach())
            smoothed = average / (1 - smoothing ** (step + 1))  # bias-corrected, as Adam does
            rates.append(rate)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > 4 * best:
                break  # diverged: higher rates only get worse
    finally:
        net.load_state_dict(net_state)
        optimizer.load_state_dict(optimizer_state)
    return RangeTest(rates, losses, suggest(rates, losses))


def suggest(rates: list[float], losses: list[float]) -> float:
    """The rate of steepest descent of the smoothed loss against log(rate), before its minimum."""
    if len(losses) < 3:
        return rates[0]
    minimum = int(np.argmin(losses))
    stop = max(minimum, 2)
    slopes = np.gradient(np.asarray(losses[:stop + 1]), np.log(rates[:stop + 1]))
    return float(rates[int(np.argmin(slopes))])
