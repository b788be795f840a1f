"""Env families that prl knows by their id's prefix: the package that registers them, and their preprocessing.

`make(env_id, kwargs)` is how `EnvFactory` builds every id. For an id of a known family it
imports the family's package first (so its ids are registered, or a missing extra is named in
one sentence), then applies the family's standard wrappers:

- `MiniGrid-...` and `BabyAI-...` (the `minigrid` extra): trained from the agent's 7x7 view
  alone (`ImgObsWrapper`; the mission text is dropped). The view holds object, colour and
  state indices of at most 10, and its space says so, so the network scales it by 1/10
  rather than by the 1/255 of a camera image.

Any other id goes to `gymnasium.make` as it is.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import gymnasium as gym
import numpy as np

from prl.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """A family of env ids: the package that registers them, prl's extra for it, and its wrappers."""

    prefixes: tuple[str, ...]
    module: str
    extra: str
    wrap: Callable[[gym.Env], gym.Env]


MINIGRID_MAX_INDEX = 10
"""The largest value in a MiniGrid view: object indices run to 10, colours to 5, states to 2."""


def _minigrid(env: gym.Env) -> gym.Env:
    from minigrid.wrappers import ImgObsWrapper

    env = ImgObsWrapper(env)
    env.observation_space = gym.spaces.Box(0, MINIGRID_MAX_INDEX, env.observation_space.shape, np.uint8)
    return env


FAMILIES = (Family(("MiniGrid-", "BabyAI-"), "minigrid", "minigrid", _minigrid),)


def family_of(env_id: str) -> Optional[Family]:
    """The family an id belongs to, by prefix, or None."""
    return next((family for family in FAMILIES if env_id.startswith(family.prefixes)), None)


def make(env_id: str, kwargs: Mapping[str, Any]) -> gym.Env:
    """Build `env_id` with `kwargs`, with its family's package imported and its wrappers applied."""
    family = family_of(env_id)
    if family is None:
        return gym.make(env_id, **kwargs)
    try:
        importlib.import_module(family.module)
    except ImportError as error:
        raise ConfigError(
            f"{env_id} needs the {family.module} package, which is not installed ({error}); "
            f'install prl\'s {family.extra} extra: pip install -e ".[{family.extra}]".'
        ) from error
    return family.wrap(gym.make(env_id, **kwargs))
