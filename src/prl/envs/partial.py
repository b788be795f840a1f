"""Partially observable tasks that prl registers with gymnasium, under the `prl/` namespace.

- `prl/CartPoleNoVel-v1`: CartPole-v1 with both velocities removed. The policy sees the cart's
  position and the pole's angle (a 2-dim Box) and must infer the velocities from what it saw
  before: a memoryless policy balances the pole for a few dozen steps at best, a recurrent one
  for the full 500. The same task as rl-zoo3's `CartPoleNoVel-v1`, sb3-contrib's benchmark for
  `RecurrentPPO`.

Importing this module registers the ids; `prl.envs.families` imports it for any `prl/` id.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

CARTPOLE_NO_VELOCITY = "prl/CartPoleNoVel-v1"
"""CartPole-v1 seen through its positions only (`HideVelocities`)."""

CARTPOLE_POSITIONS = (0, 2)
"""Indices of CartPole's cart position and pole angle; 1 and 3 are their velocities."""


class HideVelocities(gym.ObservationWrapper):
    """Keeps only the given entries of a Box observation, dropping the rest (velocities, say)."""

    def __init__(self, env: gym.Env, keep: tuple[int, ...]):
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box)  # only registered for CartPole's Box
        self.keep = np.asarray(keep)
        self.observation_space = gym.spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """The kept entries."""
        return observation[self.keep]


def make_cartpole_no_velocity(**kwargs: Any) -> gym.Env:
    """CartPole-v1 (500 steps) with its cart and pole velocities hidden."""
    return HideVelocities(gym.make("CartPole-v1", **kwargs), CARTPOLE_POSITIONS)


if CARTPOLE_NO_VELOCITY not in gym.registry:
    gym.register(CARTPOLE_NO_VELOCITY, entry_point=make_cartpole_no_velocity)
