"""What prl knows about an env's spaces: `EnvSpec`, checked from the spaces once, and how a policy's
raw action becomes an action the env accepts.

An `EnvSpec` holds the observation layout (`prl.envs.observations`) and the action space's
kind, sizes and bounds. It is probed once in the parent process (`prl.envs.factory.probe_env`),
so that an unsupported space fails before any worker starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import gymnasium as gym
import numpy as np

from prl.envs.observations import ObsLayout
from prl.errors import ConfigError

DISCRETE, MULTI_DISCRETE, CONTINUOUS = "discrete", "multi_discrete", "continuous"


@dataclass(frozen=True)
class EnvSpec:
    """What prl needs to know about an env's spaces, and how to turn policy actions into env actions."""

    name: str
    obs_shape: Tuple[int, ...]
    """The observation space's shape (() for Dict and Tuple spaces)."""
    action_kind: str
    action_dims: Tuple[int, ...]
    """Discrete: (n,). MultiDiscrete: nvec. Continuous: the flat action size, (d,)."""
    action_shape: Tuple[int, ...]
    action_low: Optional[np.ndarray] = None
    action_high: Optional[np.ndarray] = None
    action_start: Optional[np.ndarray] = None
    action_scale: Optional[float] = None
    obs_low: Optional[np.ndarray] = None
    """Flat lower bounds of the observation's vector leaves (-inf where unbounded)."""
    obs_high: Optional[np.ndarray] = None
    """Flat upper bounds of the observation's vector leaves (inf where unbounded)."""
    obs_layout: ObsLayout = dataclasses.field(kw_only=True)
    """The observation's leaves: how they are stored and encoded (one vector leaf when flat)."""
    game_scores: bool = False
    """Episodes end at each lost life, and the returns prl reports are whole games' scores,
    read from the env's info (`prl.envs.families.game_result`): Atari."""
    mask_source: Optional[str] = None
    """Where the env says which actions are legal (`prl.envs.masks`): its observation, its info,
    its `action_masks()` method, or None when it does not (or the masks are turned off)."""
    agents: int = 0
    """0 for a single-agent env; for a PettingZoo env, its number of agents, each a row (`prl.envs.agents`)."""
    agent_ids: bool = False
    """A PettingZoo env's agents see a one-hot agent id in their observations."""

    @property
    def masked(self) -> bool:
        """True when the policy acts within an action mask, read from the observation's MASK leaf."""
        return self.obs_layout.mask is not None

    @property
    def obs_dim(self) -> int:
        """Size of a flattened observation (the flat layout), or the sum of the leaves' MLP input widths."""
        if self.obs_layout.flat:
            return int(np.prod(self.obs_shape))
        return sum(leaf.size for leaf in self.obs_layout.leaves)

    @property
    def flat_obs(self) -> bool:
        """True when observations are one float vector per env (prl's original, fastest path)."""
        return self.obs_layout.flat

    @property
    def action_dim(self) -> int:
        """Numbers stored per action: 1 for Discrete, one per sub-action or action dimension."""
        return (
            1
            if self.action_kind == DISCRETE
            else len(self.action_dims)
            if self.action_kind == MULTI_DISCRETE
            else self.action_dims[0]
        )

    @property
    def is_continuous(self) -> bool:
        """True for Box action spaces."""
        return self.action_kind == CONTINUOUS

    def to_env_actions(self, actions: np.ndarray) -> list:
        """Map a [num_envs, action_dim] float array of policy actions to one env action per env."""
        if self.action_kind == DISCRETE:
            assert self.action_start is not None  # set for every discrete action space
            return [int(a) for a in actions[:, 0].astype(np.int64) + int(self.action_start[0])]
        if self.action_kind == MULTI_DISCRETE:
            assert self.action_start is not None
            return list((actions.astype(np.int64) + self.action_start).reshape((len(actions),) + self.action_shape))
        assert self.action_low is not None and self.action_high is not None  # set for every Box action space
        if self.action_scale is not None:
            mapped = actions * self.action_scale
        else:
            # Dimensions bounded on both sides map [-1, 1] onto [low, high]; the others pass as they are.
            bounded = np.isfinite(self.action_low) & np.isfinite(self.action_high)
            low, high = np.where(bounded, self.action_low, -1.0), np.where(bounded, self.action_high, 1.0)
            mapped = np.where(bounded, (high + low) / 2 + (high - low) / 2 * np.clip(actions, -1.0, 1.0), actions)
        mapped = np.clip(mapped, self.action_low, self.action_high)
        return list(mapped.astype(np.float32).reshape((len(actions),) + self.action_shape))


def wrong_shape(env_name: str, shape: Tuple[int, ...], declared: Tuple[int, ...]) -> ConfigError:
    """The error for an observation whose shape is not its observation space's."""
    return ConfigError(
        f"{env_name} returned an observation of shape {shape}, but its observation space declares {declared}; "
        "make the env's observations match its observation_space."
    )


def _describe(space: gym.Space) -> str:
    shape = getattr(space, "shape", None)
    return type(space).__name__ if shape is None else f"{type(space).__name__} {shape}"


def spec_from_spaces(
    name: str, obs_space: gym.Space, action_space: gym.Space, action_scale: Optional[float] = None
) -> EnvSpec:
    """Check that prl supports the spaces and describe them; raise ConfigError naming any other space."""
    layout = ObsLayout.from_space(obs_space, name)
    obs_shape = tuple(int(d) for d in obs_space.shape) if obs_space.shape is not None else ()
    bounds: dict[str, Any] = dict(obs_layout=layout)
    # Bounds of the vector leaves, which observation normalization covers (`prl.envs.presets`).
    vectors = [leaf for leaf in layout.leaves if leaf.low is not None]
    bounds.update(
        obs_low=np.concatenate([leaf.low for leaf in vectors]) if vectors else np.zeros(0),
        obs_high=np.concatenate([leaf.high for leaf in vectors]) if vectors else np.zeros(0),
    )
    spec = _action_spec(name, obs_shape, action_space, action_scale, bounds)
    mask = layout.mask
    if mask is not None:
        if spec.action_kind == CONTINUOUS:
            raise ConfigError(
                f"{name} gives an action mask for a {_describe(action_space)} action space; a mask needs "
                "Discrete or MultiDiscrete actions, so drop the mask or the env's continuous actions."
            )
        if mask.shape[0] != sum(spec.action_dims):
            raise ConfigError(
                f"{name}'s action mask has {mask.shape[0]} entries, but its {_describe(action_space)} action "
                f"space has {sum(spec.action_dims)} actions; give one entry per action (per value of each "
                "sub-action, concatenated, for MultiDiscrete)."
            )
    return spec


def _action_spec(
    name: str, obs_shape: Tuple[int, ...], action_space: gym.Space, action_scale: Optional[float], bounds: dict
) -> EnvSpec:
    if isinstance(action_space, gym.spaces.Discrete):
        return EnvSpec(
            name,
            obs_shape,
            DISCRETE,
            (int(action_space.n),),
            (),
            action_start=np.array([int(action_space.start)]),
            **bounds,
        )
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        nvec = action_space.nvec.reshape(-1)
        start = np.asarray(action_space.start, dtype=np.int64).reshape(-1)
        return EnvSpec(
            name,
            obs_shape,
            MULTI_DISCRETE,
            tuple(int(n) for n in nvec),
            tuple(action_space.shape),
            action_start=start,
            **bounds,
        )
    if isinstance(action_space, gym.spaces.Box):
        flat = int(np.prod(action_space.shape))
        return EnvSpec(
            name,
            obs_shape,
            CONTINUOUS,
            (flat,),
            tuple(action_space.shape),
            action_low=action_space.low.reshape(-1).astype(np.float64),
            action_high=action_space.high.reshape(-1).astype(np.float64),
            action_scale=action_scale,
            **bounds,
        )
    raise ConfigError(
        f"{name} has a {_describe(action_space)} action space, which prl does not support; "
        "use an env with a Discrete, MultiDiscrete or Box action space."
    )
