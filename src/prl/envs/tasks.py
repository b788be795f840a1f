"""Tasks that prl registers with gymnasium, under the `prl/` namespace.

- `prl/CartPoleNoVel-v1`: CartPole-v1 with both velocities removed. The policy sees the cart's
  position and the pole's angle (a 2-dim Box) and must infer the velocities from what it saw
  before: a memoryless policy balances the pole for a few dozen steps at best, a recurrent one
  for the full 500. The same task as rl-zoo3's `CartPoleNoVel-v1`, sb3-contrib's benchmark for
  `RecurrentPPO`.

- `prl/IllegalMoves-v0`: a game of illegal moves, for action masks (`prl.envs.masks`). Each of
  50 steps offers 10 moves, each with a value in [0, 1] that the agent sees; about 3 of them are
  legal, and the env says which in its observation's `action_mask` entry (and through an
  `action_masks()` method, sb3-contrib's convention). A legal move scores its value; an illegal
  one costs -1 and ends the episode. The best play takes the most valuable legal move every
  step (`best_move`), about 36 points an episode; uniformly random moves score about -0.85.

- `prl/Stragglers-v0`: an env whose step time is heavy-tailed, for the asynchronous mode's
  benchmark (`benchmarks/throughput.py --straggler`). It wraps `env_id` (CartPole-v1 by
  default) with `Stragglers`: one step in `every` (100), drawn at random, sleeps `delay_s`
  (0.05 s) first, as a remote simulator's hiccup or a heavy level would. The draws come from the
  seed of the env's first reset, so a seeded run draws the same slow steps.

Importing this module registers the ids; `prl.envs.families` imports it for any `prl/` id.
"""

from __future__ import annotations

import time
from typing import Any, Optional

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


ILLEGAL_MOVES = "prl/IllegalMoves-v0"
"""The game of illegal moves (`IllegalMoves`)."""


class IllegalMoves(gym.Env):
    """Pick the most valuable of the legal moves; an illegal move costs -1 and ends the episode.

    Observations: {"worth": Box(0, 1, (moves,)), "action_mask": MultiBinary(moves)}. Each move is
    legal with probability `legal_chance`, and at least one always is.
    """

    metadata = {"render_modes": []}

    def __init__(self, moves: int = 10, legal_chance: float = 0.3, steps: int = 50, penalty: float = -1.0):
        self.moves, self.legal_chance, self.steps, self.penalty = moves, legal_chance, steps, penalty
        self.observation_space = gym.spaces.Dict(
            {
                "worth": gym.spaces.Box(0.0, 1.0, (moves,), np.float32),
                "action_mask": gym.spaces.MultiBinary(moves),
            }
        )
        self.action_space = gym.spaces.Discrete(moves)
        self.values = np.zeros(moves, np.float32)
        self.legal = np.ones(moves, np.int8)
        self.step_count = 0

    def _deal(self) -> dict:
        self.values = self.np_random.random(self.moves, dtype=np.float32)
        self.legal = (self.np_random.random(self.moves) < self.legal_chance).astype(np.int8)
        if not self.legal.any():
            self.legal[self.np_random.integers(self.moves)] = 1
        return {"worth": self.values.copy(), "action_mask": self.legal.copy()}

    def action_masks(self) -> np.ndarray:
        """The legal moves now, as bools (sb3-contrib's MaskablePPO reads this)."""
        return self.legal.astype(bool)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self.step_count = 0
        return self._deal(), {}

    def step(self, action):
        move = int(action)
        self.step_count += 1
        if not self.legal[move]:
            return self._deal(), self.penalty, True, False, {"illegal": True}
        reward = float(self.values[move])
        return self._deal(), reward, False, self.step_count >= self.steps, {"illegal": False}


STRAGGLERS = "prl/Stragglers-v0"
"""An env with heavy-tailed step times (`Stragglers`)."""


class Stragglers(gym.Wrapper):
    """Sleeps `delay_s` before one step in `every` (at random, seeded by the first reset's seed), then steps `env`."""

    def __init__(self, env: gym.Env, every: int = 100, delay_s: float = 0.05):
        super().__init__(env)
        if every < 1 or delay_s < 0:
            raise ValueError(f"Stragglers needs every >= 1 and delay_s >= 0, got every={every}, delay_s={delay_s}.")
        self.every, self.delay_s = every, delay_s
        self._draws = np.random.default_rng()

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._draws = np.random.default_rng(seed)
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        if self._draws.random() < 1.0 / self.every:
            time.sleep(self.delay_s)
        return self.env.step(action)

    @property
    def mean_delay_s(self) -> float:
        """The sleep the wrapper adds to a step on average."""
        return self.delay_s / self.every


def make_stragglers(env_id: str = "CartPole-v1", every: int = 100, delay_s: float = 0.05, **kwargs: Any) -> gym.Env:
    """`env_id` (made with `kwargs`) behind `Stragglers`."""
    return Stragglers(gym.make(env_id, **kwargs), every, delay_s)


def best_move(observation: dict) -> int:
    """The best play of `IllegalMoves`: the most valuable legal move."""
    return int(np.argmax(np.where(observation["action_mask"].astype(bool), observation["worth"], -np.inf)))


if CARTPOLE_NO_VELOCITY not in gym.registry:
    gym.register(CARTPOLE_NO_VELOCITY, entry_point=make_cartpole_no_velocity)
if STRAGGLERS not in gym.registry:
    gym.register(STRAGGLERS, entry_point=make_stragglers)
if ILLEGAL_MOVES not in gym.registry:
    gym.register(ILLEGAL_MOVES, entry_point="prl.envs.tasks:IllegalMoves")
