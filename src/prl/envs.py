"""Environments: building them from an id or a callable, checking their spaces, mapping actions.

An `EnvSpec` is what the rest of prl knows about an environment: its observation layout
(`prl.observations`) and how a policy's raw action becomes an action the env accepts. It is probed once in the parent
process, so that an unknown id or an unsupported space fails before any worker starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple

import cloudpickle
import gymnasium as gym
import numpy as np

from prl import env_families
from prl.config import Config, EnvSource, callable_name
from prl.errors import ConfigError
from prl.observations import ObsLayout

DISCRETE, MULTI_DISCRETE, CONTINUOUS = "discrete", "multi_discrete", "continuous"


class EnvFactory:
    """A picklable recipe for one env: a Gymnasium id with kwargs, or a callable (via cloudpickle)."""

    def __init__(self, source: EnvSource, kwargs: Optional[Mapping[str, Any]] = None):
        self.env_id = source if isinstance(source, str) else None
        self.kwargs = dict(kwargs or {})
        self._pickled_fn = None if isinstance(source, str) else cloudpickle.dumps(source)
        self._fn: Optional[Callable[[], Any]] = None if isinstance(source, str) else source

    def __getstate__(self) -> dict:
        return {"env_id": self.env_id, "kwargs": self.kwargs, "_pickled_fn": self._pickled_fn}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fn = None

    def __call__(self, render_mode: Optional[str] = None) -> gym.Env:
        """Build a new env."""
        if self.env_id is not None:
            kwargs = dict(self.kwargs)
            if render_mode is not None:
                kwargs["render_mode"] = render_mode
            return env_families.make(self.env_id, kwargs)
        if self._fn is None:
            self._fn = cloudpickle.loads(self._pickled_fn)
        env = self._fn(**self.kwargs)
        if not isinstance(env, gym.Env):
            raise ConfigError(
                f"the env callable returned {type(env).__name__}, not a gymnasium.Env; return an env instance."
            )
        return env

    @property
    def name(self) -> str:
        """The id, or the callable's name."""
        if self.env_id is not None:
            return self.env_id
        return callable_name(self._fn if self._fn is not None else cloudpickle.loads(self._pickled_fn))


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
    obs_layout: Optional[ObsLayout] = None
    """The observation's leaves: how they are stored and encoded (one vector leaf when flat)."""
    game_scores: bool = False
    """Episodes end at each lost life, and the returns prl reports are whole games' scores,
    read from the env's info (`prl.env_families.game_result`): Atari."""

    @property
    def obs_dim(self) -> int:
        """Size of a flattened observation (the flat layout), or the sum of the leaves' MLP input widths."""
        if self.obs_layout is None or self.obs_layout.flat:
            return int(np.prod(self.obs_shape))
        return sum(leaf.size for leaf in self.obs_layout.leaves)

    @property
    def flat_obs(self) -> bool:
        """True when observations are one float vector per env (prl's original, fastest path)."""
        return self.obs_layout is None or self.obs_layout.flat

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
            return [int(a) for a in actions[:, 0].astype(np.int64) + int(self.action_start[0])]
        if self.action_kind == MULTI_DISCRETE:
            return list((actions.astype(np.int64) + self.action_start).reshape((len(actions),) + self.action_shape))
        if self.action_scale is not None:
            mapped = actions * self.action_scale
        else:
            # Dimensions bounded on both sides map [-1, 1] onto [low, high]; the others pass as they are.
            bounded = np.isfinite(self.action_low) & np.isfinite(self.action_high)
            low, high = np.where(bounded, self.action_low, -1.0), np.where(bounded, self.action_high, 1.0)
            mapped = np.where(bounded, (high + low) / 2 + (high - low) / 2 * np.clip(actions, -1.0, 1.0), actions)
        mapped = np.clip(mapped, self.action_low, self.action_high)
        return list(mapped.astype(np.float32).reshape((len(actions),) + self.action_shape))


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
    # Bounds of the vector leaves, which observation normalization covers (`prl.presets`).
    vectors = [leaf for leaf in layout.leaves if leaf.low is not None]
    bounds.update(
        obs_low=np.concatenate([leaf.low for leaf in vectors]) if vectors else np.zeros(0),
        obs_high=np.concatenate([leaf.high for leaf in vectors]) if vectors else np.zeros(0),
    )
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


def _unknown_id_message(env_id: str, error: Exception) -> str:
    known = list(gym.registry.keys())
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else 'run `python -c "import gymnasium; gymnasium.pprint_registry()"` to list the ids.'
    )
    return f"unknown environment id {env_id!r}; {hint}"


PRL_EXTRAS = {"mujoco": "mujoco", "box2d": "box2d", "classic-control": "video"}
"""gymnasium extras that prl has an extra for, by gymnasium's name."""


def _missing_dependency_message(name: str, error: str) -> str:
    extra = re.search(r"gymnasium\[([\w-]+)\]", error)
    if extra and extra.group(1) in PRL_EXTRAS:
        fix = f'install prl\'s {PRL_EXTRAS[extra.group(1)]} extra: pip install -e ".[{PRL_EXTRAS[extra.group(1)]}]"'
    elif extra:
        fix = f'install it: pip install "gymnasium[{extra.group(1)}]"'
    else:
        fix = "install the package it names"
    return f"{name} needs a package that is not installed ({error.strip().rstrip('.')}); {fix}."


IMPORT_NOTICES = ("pkg_resources is deprecated",)
"""Warnings that a dependency prints as it is imported (pygame, which LunarLander imports, with
setuptools 80): they say nothing about the env, and each worker would print them again."""


def make_env(factory: EnvFactory, render_mode: Optional[str] = None) -> gym.Env:
    """Build an env, turning the errors a user causes into ConfigError with a fix.

    Gymnasium's warnings are held back while the env is made: when making fails, the error
    says everything in one sentence; when it succeeds, they are re-issued, except notices
    about how a dependency imports its own files (`IMPORT_NOTICES`), which no user can act on.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            env = factory(render_mode=render_mode)
        for warning in caught:
            if any(notice in str(warning.message) for notice in IMPORT_NOTICES):
                continue
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return env
    except gym.error.UnregisteredEnv as error:
        raise ConfigError(_unknown_id_message(factory.env_id or "", error)) from error
    except gym.error.DependencyNotInstalled as error:
        raise ConfigError(_missing_dependency_message(factory.name, str(error))) from error
    except gym.error.Error as error:
        raise ConfigError(f"gymnasium cannot make {factory.name!r}: {error}") from error
    except TypeError as error:
        if factory.kwargs:
            raise ConfigError(f"{factory.name} does not accept env_kwargs {factory.kwargs}: {error}") from error
        raise


def probe_env(config: Config) -> EnvSpec:
    """Build one env in this process to check it and read its spaces."""
    factory = EnvFactory(config.env, config.env_kwargs)
    env = make_env(factory)
    try:
        spec = spec_from_spaces(factory.name, env.observation_space, env.action_space, config.policy.action_scale)
        check_first_observation(spec, env)
        family = env_families.family_of(factory.env_id) if factory.env_id else None
        return dataclasses.replace(spec, game_scores=bool(family and family.game_scores))
    finally:
        env.close()


def check_first_observation(spec: EnvSpec, env: gym.Env) -> None:
    """Reset `env` once and refuse an observation that does not fit its declared space."""
    try:
        obs, _ = env.reset(seed=0)
    except Exception as error:
        raise ConfigError(
            f"{spec.name} failed on its first reset ({type(error).__name__}: {error}); fix the env."
        ) from error
    if spec.flat_obs:
        obs = np.asarray(obs)
        if obs.size != spec.obs_dim:
            raise ConfigError(
                f"{spec.name} returned an observation of shape {obs.shape}, but its observation space declares "
                f"{spec.obs_shape}; make the env's observations match its observation_space."
            )
        leaves = [obs]
    else:
        try:
            leaves = spec.obs_layout.split(obs)
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise ConfigError(
                f"{spec.name} returned an observation that does not fit its observation space "
                f"({type(error).__name__}: {error}); make the env's observations match its observation_space."
            ) from error
        spec.obs_layout.check(leaves, spec.name)
    if not all(np.isfinite(leaf.astype(np.float64)).all() for leaf in leaves):
        raise ConfigError(f"{spec.name} returned a non-finite observation on reset; fix the env.")


def seed_for(seed: int, *path: int) -> int:
    """A 32-bit seed derived from the run seed and a path such as (worker, env index)."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])
