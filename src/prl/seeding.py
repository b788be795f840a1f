"""Seeds: every random stream of a run derived from the run seed and a path."""

from __future__ import annotations

import numpy as np


def seed_for(seed: int, *path: int) -> int:
    """A 32-bit seed derived from the run seed and a path such as (worker, env index)."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])
