"""The original program's custom-loop API: `EnvVectorizer`, `VecMemory` and the helpers its loop calls.

The original documented a loop written by the user: step `num_envs` copies of an env until
every one has finished its episode, keep each env's transitions apart, hand them to
`ppo.memory` and call `ppo.learn()`. Its helpers are the module-level functions here, so
`from prl import custom_loop as utils` keeps `utils.buffer_append(...)` and the rest working.

Everything runs in the calling process, as in the original. For speed, use `Learner` and
`ActorPool`, which collect in worker processes through shared memory.

Terms, as the original uses them: `envs_active[i]` (alias `is_env_terminal`) is True once env
i's episode has ended, and stays True until `reset()`. Arrays that `step` takes and returns
hold one row per env still running, in env order.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple, Optional

import gymnasium as gym
import numpy as np

from prl.seeding import loop_env_seed

FIELDS = ("states", "actions", "rewards", "dones", "truncated", "final_states")
"""What a memory keeps per transition; `truncated` and `final_states` are prl's additions."""


def _copy_env(env: gym.Env) -> gym.Env:
    """An independent copy of `env` (deep copy, or a fresh `gym.make` from its spec when it cannot be copied)."""
    try:
        return copy.deepcopy(env)
    except Exception as error:
        if env.spec is None:
            raise TypeError(
                f"EnvVectorizer cannot copy {type(env.unwrapped).__name__} ({type(error).__name__}: {error}); "
                "pass an env made by gym.make or one that copy.deepcopy can copy."
            ) from error
        return gym.make(env.spec)


class EnvVectorizer:
    """`num_envs` copies of `env`, stepped together until every copy has finished its episode.

    Args:
        env: the env to copy; each copy is independent and gets its own seed on the first reset.
        num_envs: number of copies.
        seed: seeds the copies' first reset (copy i from `seed` and i), so a loop repeats itself;
            None draws a fresh seed.

    `reset()` starts a new episode in every copy and marks them all running. `step(actions)`
    steps only the copies still running (`envs_active` False), one action each in env order,
    and returns their observations, rewards, terminated and truncated flags and infos. Box
    actions are clipped to the action space.
    """

    def __init__(self, env: gym.Env, num_envs: int = 1, seed: Optional[int] = 1):
        if not isinstance(env, gym.Env):
            raise TypeError(f"EnvVectorizer needs a gymnasium.Env, got {type(env).__name__}; pass gym.make(ID).")
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}.")
        self.num_envs = int(num_envs)
        self.envs = [_copy_env(env) for _ in range(self.num_envs)]
        self.action_space = env.action_space
        self.observation_space = env.observation_space
        self.envs_active = np.zeros(self.num_envs, dtype=bool)
        self.seed = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
        self._seeded = False

    def running(self) -> np.ndarray:
        """Indices of the envs whose episode is still running."""
        return indexes_of_active_environments(self.num_envs, self.envs_active)

    def reset(self) -> tuple[np.ndarray, list]:
        """Start a new episode in every env; returns (observations [num_envs, ...], infos)."""
        observations, infos = [], []
        for index, env in enumerate(self.envs):
            obs, info = env.reset(seed=None if self._seeded else loop_env_seed(self.seed, index))
            observations.append(np.asarray(obs))
            infos.append(info)
        self._seeded = True
        self.envs_active = np.zeros(self.num_envs, dtype=bool)
        return np.stack(observations), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
        """Step every running env with its action; returns (obs, rewards, terminated, truncated, infos) for them."""
        running = self.running()
        if len(running) == 0:
            raise RuntimeError("every env has finished its episode; call reset() before stepping again.")
        actions = np.asarray(actions)
        if actions.ndim == 0 or len(actions) != len(running):
            given = 1 if actions.ndim == 0 else len(actions)
            raise ValueError(
                f"step got {given} action(s) for {len(running)} running env(s); pass one action per env "
                "whose episode is still running (envs_active False), in env order."
            )
        box = self.action_space if isinstance(self.action_space, gym.spaces.Box) else None
        results = []
        for index, action in zip(running, actions):
            if box is not None:
                action = np.clip(action, box.low, box.high).astype(box.dtype)
            results.append(self.envs[index].step(action))
        obs, rewards, terminated, truncated, infos = zip(*results)
        return (
            np.stack([np.asarray(o) for o in obs]),
            np.asarray(rewards, dtype=np.float64),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            list(infos),
        )

    def close(self) -> None:
        """Close every env."""
        for env in self.envs:
            env.close()


class VecMemory:
    """Each env's transitions in its own lists, as the loop collects them (`states[i]`, `actions[i]`, ...).

    `buffer_append` fills it; `buffer_to_target_buffer_transfer` moves its contents into
    `ppo.memory` and empties it.
    """

    # Set by __init__ from FIELDS: one list per env.
    states: list[list[np.ndarray]]
    actions: list[list[np.ndarray]]
    rewards: list[list[float]]
    dones: list[list[bool]]
    truncated: list[list[bool]]
    final_states: list[list[Optional[np.ndarray]]]

    def __init__(self, num_envs: int):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}.")
        self.num_envs = int(num_envs)
        for name in FIELDS:
            setattr(self, name, [[] for _ in range(self.num_envs)])

    def push(
        self,
        idx: int,
        state: Any,
        action: Any,
        reward: Any,
        done: Any,
        truncated: bool = False,
        final_state: Any = None,
    ) -> None:
        """Store one transition of env `idx`; `final_state` is the observation after a truncated step."""
        self.states[idx].append(np.array(state, dtype=np.float32).reshape(-1))
        self.actions[idx].append(np.array(action, dtype=np.float32).reshape(-1))
        self.rewards[idx].append(float(reward))
        self.dones[idx].append(bool(done))
        self.truncated[idx].append(bool(truncated))
        self.final_states[idx].append(None if final_state is None else np.array(final_state, np.float32).reshape(-1))

    def clear(self) -> None:
        """Forget every transition."""
        for name in FIELDS:
            for stream in getattr(self, name):
                stream.clear()

    def __len__(self) -> int:
        return sum(len(stream) for stream in self.states)


class Column(NamedTuple):
    """Every transition of a memory laid end to end in one time column, as a prl worker lays out one env.

    An ended episode is followed at once by the next one, so row t + 1 of `obs` after an ended
    step belongs to another episode and GAE, which stops at every end, never reads it.
    """

    obs: np.ndarray
    """[L + 1, D] observations; row L follows the last step."""
    actions: np.ndarray
    """[L, A] actions as the loop stored them."""
    rewards: np.ndarray
    """[L] rewards."""
    terminated: np.ndarray
    """[L] bool: the episode ended here and nothing follows it (no bootstrap)."""
    truncated: np.ndarray
    """[L] bool: the episode was cut here; its value bootstraps from `final_obs`."""
    final_obs: np.ndarray
    """[L, D] the observation to bootstrap from where truncated (zeros elsewhere)."""


class EpisodeMemory:
    """`ppo.memory`: each env's transitions in order, kept apart per env, until `ppo.learn()` trains on them.

    Transfers append to the env's stream, so an episode split across two transfers continues.
    """

    def __init__(self):
        self.streams: dict[int, dict[str, list]] = {}

    def extend(self, buffer: VecMemory) -> None:
        """Append every env's transitions from `buffer` (which is left as it is)."""
        for env_index in range(buffer.num_envs):
            if not buffer.states[env_index]:
                continue
            stream = self.streams.setdefault(env_index, {name: [] for name in FIELDS})
            for name in FIELDS:
                stream[name].extend(getattr(buffer, name)[env_index])

    def clear(self) -> None:
        """Forget every transition."""
        self.streams.clear()

    def __len__(self) -> int:
        return sum(len(stream["states"]) for stream in self.streams.values())

    def column(self) -> Column:
        """The transitions of every env, env after env, as one column (see `Column` and `episodes_column`)."""
        return episodes_column([self.streams[index] for index in sorted(self.streams)])


def episodes_column(streams: list[dict[str, list]]) -> Column:
    """Lay the streams (dicts of `FIELDS` lists, one per env) end to end in one time column.

    How each step ends:
    - done with a final state and marked truncated: truncated, bootstrapping from that state;
    - done otherwise: terminated (the original loop passes `dones | truncates`, which cannot
      tell a time limit from a real end);
    - a stream's last step that is not done (the episode goes on beyond this memory):
      truncated, bootstrapping from its own state, the last one known.
    """
    states = [state for stream in streams for state in stream["states"]]
    if not states:
        raise ValueError("the memory holds no transitions.")
    length, width = len(states), states[0].size
    terminated = np.zeros(length, dtype=bool)
    truncated = np.zeros(length, dtype=bool)
    final_obs = np.zeros((length, width), dtype=np.float32)
    row = 0
    for stream in streams:
        steps = len(stream["states"])
        for t in range(steps):
            cut_here = t == steps - 1 and not stream["dones"][t]
            final_state = stream["final_states"][t]
            if stream["dones"][t] and stream["truncated"][t] and final_state is not None:
                truncated[row], final_obs[row] = True, final_state
            elif stream["dones"][t]:
                terminated[row] = True
            elif cut_here:
                truncated[row], final_obs[row] = True, stream["states"][t]
            row += 1
    last = final_obs[-1] if truncated[-1] else states[-1]
    return Column(
        obs=np.stack(states + [last]).astype(np.float32),
        actions=np.stack([action for stream in streams for action in stream["actions"]]).astype(np.float32),
        rewards=np.asarray([reward for stream in streams for reward in stream["rewards"]], dtype=np.float32),
        terminated=terminated,
        truncated=truncated,
        final_obs=final_obs,
    )


def indexes_of_active_environments(num_envs: int, is_env_terminal: np.ndarray) -> np.ndarray:
    """Indices of the envs whose episode is still running."""
    return np.arange(num_envs)[~np.asarray(is_env_terminal, dtype=bool)]


def number_of_active_environments(is_env_terminal: np.ndarray) -> int:
    """How many envs are still running."""
    return int(np.sum(~np.asarray(is_env_terminal, dtype=bool)))


def range_of_active_environments(is_env_terminal: np.ndarray) -> np.ndarray:
    """Row numbers 0..k-1 of the k running envs in the arrays `step` returns."""
    return np.arange(number_of_active_environments(is_env_terminal))


def inactive_states_dropout(states: np.ndarray, dones: np.ndarray) -> np.ndarray:
    """Keep only the rows of envs whose episode did not just end, so they are never acted on again."""
    dones = np.asarray(dones, dtype=bool)
    if len(states) != len(dones):
        raise ValueError(
            f"inactive_states_dropout got {len(states)} states but {len(dones)} done flags; pass both from one step."
        )
    return states[~dones]


def update_active_environments_list(is_env_terminal: np.ndarray, dones: np.ndarray) -> np.ndarray:
    """Mark the running envs whose episode just ended (in place); returns the same array."""
    running = indexes_of_active_environments(len(is_env_terminal), is_env_terminal)
    dones = np.asarray(dones, dtype=bool)
    if len(dones) != len(running):
        raise ValueError(
            f"update_active_environments_list got {len(dones)} done flags for {len(running)} running env(s); "
            "pass the flags of the step just taken, before updating envs_active anywhere else."
        )
    is_env_terminal[running] = dones
    return is_env_terminal


def buffer_append(
    buffer: VecMemory,
    states: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    dones: np.ndarray,
    is_env_terminal: np.ndarray,
    num_envs: int,
    truncated: Optional[np.ndarray] = None,
    next_states: Optional[np.ndarray] = None,
) -> None:
    """Store one transition for each env still running (rows in env order, as `step` returns them).

    `is_env_terminal` is the vectorizer's `envs_active` before this step's update. Passing
    `truncated` and `next_states` as well (prl's addition) lets `learn()` bootstrap an episode
    cut by a time limit from its real final observation instead of treating it as ended.
    """
    if num_envs != buffer.num_envs or len(is_env_terminal) != num_envs:
        raise ValueError(
            f"buffer_append got num_envs={num_envs} with a VecMemory of {buffer.num_envs} envs and "
            f"{len(is_env_terminal)} envs_active flags; create EnvVectorizer and VecMemory with the same num_envs."
        )
    env_indices = indexes_of_active_environments(num_envs, is_env_terminal)
    for name, rows in (("states", states), ("actions", actions), ("rewards", rewards), ("dones", dones)):
        if len(rows) != len(env_indices):
            raise ValueError(
                f"buffer_append got {len(rows)} {name} for {len(env_indices)} running env(s); "
                "pass this step's arrays and envs_active before it is updated."
            )
    for row, env_index in enumerate(env_indices):
        cut = truncated is not None and bool(truncated[row])
        buffer.push(
            env_index,
            states[row],
            actions[row],
            rewards[row],
            dones[row],
            truncated=cut,
            final_state=next_states[row] if cut and next_states is not None else None,
        )


def buffer_to_target_buffer_transfer(buffer: VecMemory, target_buffer: EpisodeMemory) -> None:
    """Move every env's transitions from `buffer` into `target_buffer` (`ppo.memory`) and empty `buffer`."""
    if not isinstance(target_buffer, EpisodeMemory):
        raise TypeError(
            f"the target must be ppo.memory (an EpisodeMemory), got {type(target_buffer).__name__}; pass ppo.memory."
        )
    target_buffer.extend(buffer)
    buffer.clear()
