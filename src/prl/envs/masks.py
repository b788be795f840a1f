"""Action masks: which of its actions an env allows at each step, wherever the env says so.

An env with Discrete or MultiDiscrete actions says which are legal in one of three ways, looked
for in this order when the run starts (`find_source`):

1. `OBSERVATION`: a top-level Dict observation entry named `action_mask` (PettingZoo's and
   many games' convention);
2. `INFO`: `info["action_mask"]`, from reset and from every step;
3. `METHOD`: a method `action_masks()` (sb3-contrib's MaskablePPO convention), asked after
   every reset and step.

Whatever the source, the mask is one bool (or 0/1) per action, and for MultiDiscrete the masks
of the sub-actions concatenated, as sb3-contrib lays them out. `expose` makes the second and
third sources look like the first: the mask becomes the observation's `action_mask` entry
(`MaskInObservation`). So the mask travels with the observation through every path: it is
stored in the rollout slot beside it, the central inference server and Ray actors receive it,
evaluation and video act on it, and the learner scores each action under the mask it was
taken with, so the first ratio of a synchronous update is still exactly 1. The policy drops
the logits of illegal actions (`prl.nn.policy`).

With `Config.action_masks` off (`HIDDEN`), the policy may take any action; a mask the env puts
in its observation stays there as an ordinary input, renamed `legal_actions` (`MaskAsInput`),
which is how the masks' worth is measured on the same task.

A mask that allows no action (for some sub-action), or has the wrong number of entries, is the
env's error: `check` names the env, where it runs and the step, and the run stops.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import gymnasium as gym
import numpy as np

from prl.envs.observations import MASK_KEY
from prl.errors import ConfigError

OBSERVATION, INFO, METHOD, HIDDEN = "observation", "info", "method", "hidden"
"""Where an env's mask comes from (see the module docstring); HIDDEN: a mask in the observation, turned off."""

METHOD_NAME = "action_masks"
"""sb3-contrib's name for an env's mask method."""

INPUT_KEY = "legal_actions"
"""The observation key a mask moves to when masks are off: an input like any other."""

WRAPPED_KEY = "observation"
"""Where `MaskInObservation` puts an observation that is not a Dict."""


def _method(env: gym.Env):
    try:
        method = env.get_wrapper_attr(METHOD_NAME)
    except AttributeError:
        return None
    return method if callable(method) else None


def find_source(env: gym.Env, reset_info: Mapping[str, Any], enabled: bool = True) -> Optional[str]:
    """Where `env` (just reset, with `reset_info`) gives its action mask: OBSERVATION, INFO, METHOD,
    HIDDEN (an observation mask while `enabled` is False), or None."""
    space = env.observation_space
    in_observation = isinstance(space, gym.spaces.Dict) and MASK_KEY in space.spaces
    if not enabled:
        return HIDDEN if in_observation else None
    if in_observation:
        return OBSERVATION
    if MASK_KEY in reset_info:
        return INFO
    if _method(env) is not None:
        return METHOD
    return None


def mask_width(action_space: gym.Space) -> int:
    """Entries of a mask for `action_space`: n for Discrete, the sum of nvec for MultiDiscrete."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return int(np.asarray(action_space.nvec).sum())
    raise ConfigError(
        f"an action mask needs Discrete or MultiDiscrete actions, not {type(action_space).__name__}; "
        "drop the env's mask, or run with --no-action-masks."
    )


class MaskInObservation(gym.Wrapper):
    """Moves a mask from `info` or from `action_masks()` into the observation's `action_mask` entry.

    A Dict observation gains the entry; any other observation moves under `observation`.
    """

    def __init__(self, env: gym.Env, source: str):
        super().__init__(env)
        self.source = source
        self.mask_method = _method(env) if source == METHOD else None
        """The env's `action_masks`, looked up once (asked at every step)."""
        width = mask_width(env.action_space)
        space = env.observation_space
        self.wraps_dict = isinstance(space, gym.spaces.Dict)
        """True when the env's own observation is a Dict, whose entries the mask joins."""
        entries = dict(space.spaces) if isinstance(space, gym.spaces.Dict) else {WRAPPED_KEY: space}
        self.observation_space = gym.spaces.Dict({**entries, MASK_KEY: gym.spaces.MultiBinary(width)})

    def _with_mask(self, obs: Any, info: Mapping[str, Any]) -> dict:
        if self.mask_method is None:
            if MASK_KEY not in info:
                raise ConfigError(
                    f"{self.env.spec.id if self.env.spec else 'the env'} gave info['action_mask'] on its first "
                    "reset but not at this step; return the mask in the info of every reset and step."
                )
            mask = info[MASK_KEY]
        else:
            mask = self.mask_method()
        entries = dict(obs) if self.wraps_dict else {WRAPPED_KEY: obs}
        return {**entries, MASK_KEY: np.asarray(mask)}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._with_mask(obs, info), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._with_mask(obs, info), reward, terminated, truncated, info


class MaskAsInput(gym.ObservationWrapper):
    """Renames the observation's `action_mask` entry `legal_actions`: masks off, the mask an input."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.observation_space
        assert isinstance(space, gym.spaces.Dict)  # HIDDEN is only found for a Dict with a mask
        self.observation_space = gym.spaces.Dict(
            {(INPUT_KEY if key == MASK_KEY else key): sub for key, sub in space.spaces.items()}
        )

    def observation(self, observation: dict) -> dict:
        """The same entries, the mask under its new name."""
        return {(INPUT_KEY if key == MASK_KEY else key): value for key, value in observation.items()}


def expose(env: gym.Env, source: Optional[str]) -> gym.Env:
    """`env` with its mask (from `source`) in the observation's `action_mask` entry, or out of it for HIDDEN."""
    if source in (INFO, METHOD):
        return MaskInObservation(env, source)
    if source == HIDDEN:
        return MaskAsInput(env)
    return env


def check(mask: np.ndarray, action_dims: Sequence[int], where: Callable[[int], str]) -> None:
    """Refuse masks [E, sum(action_dims)] in which some env allows no action (of some sub-action).

    `where(i)` names env i of the batch, where it runs and the step, for the error's sentence.
    """
    start = 0
    for head, n in enumerate(action_dims):
        allowed = mask[:, start : start + n].any(axis=1)
        if not allowed.all():
            env = int(np.flatnonzero(~allowed)[0])
            part = f" for sub-action {head}" if len(action_dims) > 1 else ""
            raise ConfigError(
                f"{where(env)} allowed no action{part}; "
                "an action mask must leave at least one action legal at every step."
            )
        start += n
