"""Learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, floor: float = 0.01) -> float:
    """Multiplier of the base learning rate at ``step``.

    1. Linear warm-up from ~0 to 1 over ``warmup_steps``: the new head's first, random gradients
       must not wreck the pretrained weights.
    2. Cosine decay from 1 down to ``floor`` at ``total_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
