"""Seeds derived from a run's seed and where a draw happens (epoch, image, step), so a random draw
depends on what it is for, not on which process or worker makes it, or in what order."""

from __future__ import annotations

import numpy as np


def derived_seed(seed: int, *where: int) -> int:
    """A 63-bit seed for the draw at ``where`` of a run seeded ``seed`` (numpy's SeedSequence mixes
    them, so neighbouring keys give unrelated streams)."""
    return int(np.random.SeedSequence([int(seed), *map(int, where)]).generate_state(2, np.uint64)[0] >> np.uint64(1))
