"""Many agents per env: a PettingZoo `ParallelEnv` seen as one row per agent, for one shared policy.

Each agent of a `ParallelEnv` is a row of the worker's slot, as PufferLib and CleanRL's
ppo_pettingzoo_ma_atari lay them out (parameter sharing). `AgentGroup` owns one env and its
agents' rows; `AgentRow` is one agent's view with the reset and step of a single-agent env, so
the collector's step loop, evaluation and every fault path treat it as they treat any env.

The step of all agents is one call: before the rows are stepped, `AgentGroup.step` takes every
live agent's action and steps the env once; each row's `step` then returns its share.

Rows and episodes:
- An agent's episode ends when it is terminated or truncated; its row records that episode.
- An agent that finishes while the others play on leaves its row dead until the env ends: the
  row shows a padding observation (zeros, with every action legal) and a reward of 0, its
  `alive` entry is False, so the learner leaves it out of the loss and the step counts, and its
  steps are not an episode (its info is `PADDING`).
- When every agent has finished, the env ends: the first row to reset resets it, and every row
  starts its agent's next episode there.

Supported: `ParallelEnv`s whose agents share one observation space and one action space (a
PettingZoo `action_mask` in a Dict observation is the agents' mask), and the agents in
`possible_agents` from the start. Agents with different spaces and turn-based (AEC) envs are
refused in one sentence: a turn-based env has one agent acting at a time, which a row per
agent does not describe.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np

from prl.envs.observations import MASK_KEY
from prl.errors import ConfigError

PREFIX = "pettingzoo:"
"""Ids of PettingZoo envs: `pettingzoo:<module>`, a module with a `parallel_env` function
(`pettingzoo:mpe2.simple_spread_v3`, `pettingzoo:pettingzoo.butterfly.pistonball_v6`)."""

AGENT_ID_KEY = "agent_id"
"""The Dict key of the one-hot agent id that `agent_ids` adds to a Dict observation."""

PADDING: dict = {"prl_padding": True}
"""The info of a dead agent's row: its steps are padding, not an episode."""


def is_parallel(env: Any) -> bool:
    """True for a PettingZoo ParallelEnv (by its interface, so PettingZoo need not be installed)."""
    return hasattr(env, "possible_agents") and not hasattr(env, "agent_iter") and callable(getattr(env, "step", None))


def is_turn_based(env: Any) -> bool:
    """True for a PettingZoo AECEnv, whose agents act one at a time."""
    return hasattr(env, "possible_agents") and hasattr(env, "agent_iter")


def turn_based_error(name: str) -> ConfigError:
    """The refusal of a turn-based (AEC) env, with what to do instead."""
    return ConfigError(
        f"{name} is a turn-based PettingZoo (AEC) env, and prl trains ParallelEnvs only, one row per agent; "
        "give its parallel_env (pettingzoo.utils.conversions.aec_to_parallel, for envs whose agents all act "
        "every cycle), or a single-agent gymnasium env that plays the other seats itself."
    )


def make_parallel(env_id: str, kwargs: dict) -> Any:
    """Build the ParallelEnv of `pettingzoo:<module>` with `kwargs`, naming a missing package or function."""
    module_name = env_id[len(PREFIX) :]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        extra = "mpe2" if module_name.startswith("mpe2") else "pettingzoo"
        raise ConfigError(
            f"{env_id} needs a package that is not installed ({error}); "
            f'install prl\'s {extra} extra: pip install -e ".[{extra}]".'
        ) from error
    if not hasattr(module, "parallel_env"):
        if hasattr(module, "env"):
            raise turn_based_error(env_id)
        raise ConfigError(
            f"{module_name} has no parallel_env function; give a PettingZoo env module, such as "
            f"{PREFIX}mpe2.simple_spread_v3."
        )
    return module.parallel_env(**kwargs)


def check_agents(env: Any, name: str) -> None:
    """Refuse a ParallelEnv whose agents do not share one observation space and one action space."""
    agents = list(env.possible_agents)
    if not agents:
        raise ConfigError(f"{name} has no agents in possible_agents; give an env with at least one agent.")
    first = agents[0]
    for agent in agents[1:]:
        for kind, space_of in (("observation", env.observation_space), ("action", env.action_space)):
            if space_of(agent) != space_of(first):
                raise ConfigError(
                    f"{name}'s agents {first!r} and {agent!r} have different {kind} spaces ({space_of(first)} and "
                    f"{space_of(agent)}); prl shares one policy between agents, so they need equal spaces: wrap "
                    "the env to pad the smaller ones (SuperSuit's pad_observations_v0 and pad_action_space_v0)."
                )


def _with_agent_id(space: gym.Space, agents: int) -> gym.Space:
    """The agents' observation space with a one-hot agent id: appended to a vector, or a Dict entry."""
    one_hot = gym.spaces.Box(0.0, 1.0, (agents,), np.float32)
    if isinstance(space, gym.spaces.Dict):
        if AGENT_ID_KEY in space.spaces:
            raise ConfigError(f"the agents' Dict observation already has an {AGENT_ID_KEY!r} entry; drop agent_ids.")
        return gym.spaces.Dict({**space.spaces, AGENT_ID_KEY: one_hot})
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        low = np.concatenate([space.low.astype(np.float32), one_hot.low])
        high = np.concatenate([space.high.astype(np.float32), one_hot.high])
        return gym.spaces.Box(low, high, dtype=np.float32)
    raise ConfigError(
        f"agent_ids adds a one-hot id to a vector or Dict observation, and the agents observe {space}; "
        "drop agent_ids, or give the env a Dict observation."
    )


def _padding(space: gym.Space) -> Any:
    """A dead agent's observation: zeros, with every action legal in an action mask."""
    if isinstance(space, gym.spaces.Dict):
        return {key: _padding(sub) if key != MASK_KEY else np.ones(sub.shape, sub.dtype) for key, sub in space.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_padding(sub) for sub in space.spaces)
    return np.zeros(space.shape, space.dtype)


class AgentGroup:
    """One ParallelEnv and its agents' rows (`rows`), stepped all at once by `step`.

    Args:
        env: the ParallelEnv; this group owns and closes it.
        name: the env's name, for errors.
        agent_ids: add a one-hot agent id to each agent's observation.
        alive: a bool array with one entry per agent, kept up to date by this group: True while
            that agent plays (the collector passes a view of its own per-row array).
    """

    def __init__(self, env: Any, name: str, agent_ids: bool = False, alive: Optional[np.ndarray] = None):
        check_agents(env, name)
        self.env = env
        self.name = name
        self.agents = list(env.possible_agents)
        count = len(self.agents)
        space = env.observation_space(self.agents[0])
        self.observation_space = _with_agent_id(space, count) if agent_ids else space
        self.action_space = env.action_space(self.agents[0])
        self._one_hot = np.eye(count, dtype=np.float32) if agent_ids else None
        self._dict_obs = isinstance(space, gym.spaces.Dict)
        self.alive = alive if alive is not None else np.zeros(count, dtype=bool)
        self.ended = True
        """Every agent has finished: the next reset of a row resets the env."""
        self._fresh = [False] * count
        self._first: list = [None] * count
        self._results: list = [None] * count
        self._padding = _padding(self.observation_space)
        self.team_return = 0.0
        """The sum of every agent's rewards in the env's current episode."""
        self.finished_team_return: Optional[float] = None
        """The team return of the episode the last `step` ended, else None."""
        self.rows = [AgentRow(self, index) for index in range(count)]

    def _observe(self, index: int, obs: Any) -> Any:
        if self._one_hot is None:
            return obs
        if self._dict_obs:
            return {**obs, AGENT_ID_KEY: self._one_hot[index]}
        return np.concatenate([np.asarray(obs, dtype=np.float32).reshape(-1), self._one_hot[index]])

    def _reset(self, seed: Optional[int]) -> None:
        observations, infos = self.env.reset(seed=seed)
        for index, agent in enumerate(self.agents):
            present = agent in observations
            self.alive[index] = present
            self._fresh[index] = True
            self._first[index] = (
                (self._observe(index, observations[agent]), infos.get(agent, {}))
                if present
                else (self._padding, PADDING)
            )
        self.ended = False
        self.team_return = 0.0

    def reset_row(self, index: int, seed: Optional[int] = None) -> tuple[Any, dict]:
        """Row `index`'s reset: its agent's first observation, resetting the env if it has ended (or when
        a row that already has its first observation asks again with a seed, to start over), or padding."""
        if self.ended or (seed is not None and not self._fresh[index]):
            self._reset(seed)
        if self._fresh[index]:
            self._fresh[index] = False
            return self._first[index]
        return self._padding, PADDING

    def step(self, actions: Sequence[Any]) -> None:
        """Step the env once with the live agents' actions (`actions[i]` for row i; dead rows' are ignored)."""
        joint = {agent: actions[index] for index, agent in enumerate(self.agents) if self.alive[index]}
        observations, rewards, terminations, truncations, infos = self.env.step(joint)
        self.finished_team_return = None
        for index, agent in enumerate(self.agents):
            if not self.alive[index]:
                self._results[index] = None
                continue
            reward = float(rewards.get(agent, 0.0))
            terminated, truncated = bool(terminations.get(agent, False)), bool(truncations.get(agent, False))
            self.team_return += reward
            obs = observations.get(agent)
            self._results[index] = (
                self._observe(index, obs) if obs is not None else self._padding,
                reward,
                terminated,
                truncated,
                infos.get(agent, {}),
            )
            if terminated or truncated:
                self.alive[index] = False
        if not self.alive.any() or not self.env.agents:
            self.alive[:] = False
            self.ended = True
            self.finished_team_return = self.team_return
        for index in range(len(self.agents)):
            if self._results[index] is None:  # dead before this step: padding, which ends with the env
                self._results[index] = (self._padding, 0.0, self.ended, False, PADDING)
            elif self.ended and not (self._results[index][2] or self._results[index][3]):
                # The env ended while this agent still played (its agents list emptied): a cut episode.
                self._results[index] = self._results[index][:3] + (True,) + self._results[index][4:]

    def result(self, index: int) -> tuple:
        """Row `index`'s share of the last `step`: (observation, reward, terminated, truncated, info)."""
        result = self._results[index]
        if result is None:
            raise RuntimeError(f"row {index} of {self.name} was stepped before AgentGroup.step gave it a result.")
        self._results[index] = None
        return result

    def render(self) -> Any:
        """The env's frame (PettingZoo's render)."""
        return self.env.render()

    def close(self) -> None:
        """Close the env."""
        self.env.close()


class AgentRow(gym.Env):
    """One agent of an `AgentGroup` as a single-agent env: its reset, and its share of the group's step."""

    def __init__(self, group: AgentGroup, index: int):
        self.group = group
        self.index = index
        self.observation_space = group.observation_space
        self.action_space = group.action_space

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[Any, dict]:
        """This agent's next first observation (the env resets when every agent has finished)."""
        return self.group.reset_row(self.index, seed)

    def step(self, action: Any) -> tuple:
        """This agent's share of the group's last step (`AgentGroup.step` took its action)."""
        return self.group.result(self.index)

    def close(self) -> None:
        """The first row closes the group's env."""
        if self.index == 0:
            self.group.close()


def group_of(row: gym.Env) -> AgentGroup:
    """The `AgentGroup` behind an agent's row (through any wrappers around it)."""
    unwrapped = row.unwrapped
    if not isinstance(unwrapped, AgentRow):
        raise TypeError(f"{type(unwrapped).__name__} is not an agent's row of a PettingZoo env.")
    return unwrapped.group
