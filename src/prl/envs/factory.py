"""Building envs: a picklable recipe from an id or a callable, errors a user can fix, and the probe.

`EnvFactory` travels to every worker; `make_env` builds from it and turns gymnasium's errors
into one sentence with the fix; `probe_env` builds one env in the parent to read its spec.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import warnings
from typing import Any, Callable, Mapping, Optional

import cloudpickle
import gymnasium as gym
import numpy as np

from prl.config import Config, EnvSource, callable_name
from prl.envs import agents as env_agents
from prl.envs import families as env_families
from prl.envs import masks as env_masks
from prl.envs.observations import MASK_KEY
from prl.envs.spec import EnvSpec, spec_from_spaces, wrong_shape
from prl.errors import ConfigError


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

    def __call__(self, render_mode: Optional[str] = None) -> Any:
        """Build a new env: a gymnasium.Env, or a PettingZoo ParallelEnv (`prl.envs.agents`)."""
        if self.env_id is not None:
            kwargs = dict(self.kwargs)
            if render_mode is not None:
                kwargs["render_mode"] = render_mode
            if self.env_id.startswith(env_agents.PREFIX):
                return env_agents.make_parallel(self.env_id, kwargs)
            return env_families.make(self.env_id, kwargs)
        if self._fn is None:
            self._fn = cloudpickle.loads(self._pickled_fn)
        env = self._fn(**self.kwargs)
        if env_agents.is_turn_based(env):
            raise env_agents.turn_based_error(self.name)
        if not isinstance(env, gym.Env) and not env_agents.is_parallel(env):
            raise ConfigError(
                f"the env callable returned {type(env).__name__}, not a gymnasium.Env or a PettingZoo ParallelEnv; "
                "return an env instance."
            )
        return env

    @property
    def name(self) -> str:
        """The id, or the callable's name."""
        if self.env_id is not None:
            return self.env_id
        return callable_name(self._fn if self._fn is not None else cloudpickle.loads(self._pickled_fn))


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


def make_env(factory: EnvFactory, render_mode: Optional[str] = None, mask_source: Optional[str] = None) -> gym.Env:
    """Build a single-agent env, turning the errors a user causes into ConfigError with a fix.

    `mask_source` (an `EnvSpec`'s, found when the run started) puts the env's action mask where
    the policy reads it (`prl.envs.masks.expose`). A PettingZoo env is refused here: its agents
    are rows, which `make_rows` builds.
    """
    env = _build(factory, render_mode)
    if env_agents.is_parallel(env):
        env.close()
        raise ConfigError(
            f"{factory.name} is a PettingZoo env with several agents, which this API does not train; "
            "train it with prl.train or scripts/train.py, where each agent is a row."
        )
    return env_masks.expose(env, mask_source)


def make_rows(
    factory: EnvFactory, spec: EnvSpec, rows: int, render_mode: Optional[str] = None, alive: Optional[np.ndarray] = None
) -> list[gym.Env]:
    """The `rows` envs of a worker or an evaluation, one per row of its slot.

    For a single-agent env, `rows` envs. For a PettingZoo env (`spec.agents`), `rows / agents`
    envs whose agents are the rows (`prl.envs.agents`); `alive`, one entry per row, is kept up
    to date with which rows' agents play.
    """
    if not spec.agents:
        return [make_env(factory, render_mode, spec.mask_source) for _ in range(rows)]
    check_rows(spec, rows)
    alive = alive if alive is not None else np.zeros(rows, dtype=bool)
    made: list[gym.Env] = []
    for first in range(0, rows, spec.agents):
        group = env_agents.AgentGroup(
            _build(factory, render_mode), spec.name, spec.agent_ids, alive[first : first + spec.agents]
        )
        made += [env_masks.expose(row, spec.mask_source) for row in group.rows]
    return made


def check_rows(spec: EnvSpec, rows: int) -> None:
    """Refuse a number of rows per worker that is not a whole number of `spec`'s PettingZoo envs."""
    if spec.agents and rows % spec.agents:
        raise ConfigError(
            f"{spec.name} has {spec.agents} agents, each a row, so --envs-per-worker ({rows}) must be a "
            f"multiple of {spec.agents}; give --envs-per-worker {max(1, rows // spec.agents) * spec.agents}."
        )


def _build(factory: EnvFactory, render_mode: Optional[str] = None) -> Any:
    """`factory`'s env, with the errors a user causes turned into ConfigError with a fix.

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
    """Build one env in this process to check it and read its spaces.

    Whatever making it raises is a cause the user can fix here, in the env or its kwargs, so it
    ends as a ConfigError naming both, before any process starts.
    """
    factory = EnvFactory(config.env, config.env_kwargs)
    try:
        env = _build(factory)
        if env_agents.is_parallel(env):
            return _probe_agents(config, factory, env)
        env = env_masks.expose(env, None)
    except ConfigError:
        raise
    except Exception as error:
        given = f" with env_kwargs {factory.kwargs}" if factory.kwargs else ""
        raise ConfigError(
            f"{factory.name} cannot be made{given} ({type(error).__name__}: {error}); fix the env or its env_kwargs."
        ) from error
    try:
        _, info = first_reset(env, factory.name)
        source = env_masks.find_source(env, info, config.action_masks)
        env = env_masks.expose(env, source)
        spec = spec_from_spaces(factory.name, env.observation_space, env.action_space, config.policy.action_scale)
        check_first_observation(spec, env)
        family = env_families.family_of(factory.env_id) if factory.env_id else None
        return dataclasses.replace(spec, game_scores=bool(family and family.game_scores), mask_source=source)
    finally:
        env.close()


def _probe_agents(config: Config, factory: EnvFactory, env: Any) -> EnvSpec:
    """`probe_env` for a PettingZoo env: its first agent's row, as every agent's (they share spaces)."""
    group = env_agents.AgentGroup(env, factory.name, config.agent_ids)
    try:
        row = group.rows[0]
        _, info = first_reset(row, factory.name)
        source = env_masks.find_source(row, info, config.action_masks)
        if source not in (None, env_masks.OBSERVATION):
            raise ConfigError(
                f"{factory.name}'s agents give their action masks in their {source}; prl reads a PettingZoo "
                f"env's masks from a Dict observation entry {MASK_KEY!r}, PettingZoo's convention, so put it there."
            )
        spec = spec_from_spaces(factory.name, row.observation_space, row.action_space, config.policy.action_scale)
        check_first_observation(spec, row)
        spec = dataclasses.replace(spec, mask_source=source, agents=len(group.agents), agent_ids=config.agent_ids)
        check_rows(spec, config.envs_per_worker)
        return spec
    finally:
        group.close()


def first_reset(env: gym.Env, name: str) -> tuple[Any, dict]:
    """`env.reset(seed=0)`, whose failure is the env's to fix."""
    try:
        return env.reset(seed=0)
    except Exception as error:
        raise ConfigError(
            f"{name} failed on its first reset ({type(error).__name__}: {error}); fix the env."
        ) from error


def check_first_observation(spec: EnvSpec, env: gym.Env) -> None:
    """Reset `env` once and refuse an observation that does not fit its declared space."""
    obs, _ = first_reset(env, spec.name)
    if spec.flat_obs:
        obs = np.asarray(obs)
        if obs.size != spec.obs_dim:
            raise wrong_shape(spec.name, obs.shape, spec.obs_shape)
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
