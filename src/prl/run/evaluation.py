"""Evaluation: run whole episodes with a policy in this process, all envs stepped as one batch."""

from __future__ import annotations

import copy
import functools
import warnings
from typing import Optional

import numpy as np
import torch

from prl.envs import masks as env_masks
from prl.envs.agents import group_of
from prl.envs.factory import EnvFactory, make_rows
from prl.envs.families import GAME_LENGTH, GAME_SCORE, game_result
from prl.envs.observations import MASK_KEY, map_obs
from prl.nn.policy import ActorCritic
from prl.seeding import evaluation_seed

MAX_EPISODE_STEPS = 100_000
"""Safety bound for envs without a time limit: an episode this long is cut and counted as is."""

STALL_STEPS = 2_000
"""For whole games (Atari): a game that scores nothing for this many steps is ended there and
counted with its score so far. A deterministic policy that never presses FIRE would otherwise
sit until ALE's 27,000-step limit."""


def _episode_step(policy: ActorCritic, live: np.ndarray, lengths: np.ndarray, row: int) -> str:
    """Evaluation episode `live[row]` and its step, as an error names them."""
    return f"{policy.spec.name} (evaluation episode {live[row]}, at step {lengths[live[row]]})"


def _step_groups(envs: list, live: np.ndarray, env_actions: list, agents: int) -> None:
    """Step each PettingZoo env with live rows once, with its live agents' actions (`prl.envs.agents`)."""
    joint: dict[int, list] = {}
    for row, action in zip(live, env_actions):
        joint.setdefault(row // agents, [None] * agents)[row % agents] = action
    for env, actions in joint.items():
        group_of(envs[env * agents]).step(actions)


def evaluate(
    policy: ActorCritic,
    factory: EnvFactory,
    episodes: int,
    seed: int,
    deterministic: bool = True,
    max_episode_steps: Optional[int] = None,
) -> dict:
    """Run `episodes` episodes (one per env, stepped together) and return their returns and lengths.

    Uses a CPU copy of the policy, so the learner's device is left alone. Returns a dict with
    `returns` and `lengths` lists and the mean, std, min and max of each. For a PettingZoo env,
    `episodes` envs play, the returns and lengths are each agent's, and `team_returns` (with its
    mean and std, `team_return_mean` and `team_return_std`) sums each env's agents' returns. For envs whose
    episodes are lives of a game (`EnvSpec.game_scores`), an episode is a whole game and its
    return the game's real score; `stalled` counts the games ended after STALL_STEPS without
    a point, and a warning says so.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}.")
    cpu_policy = copy.deepcopy(policy).to("cpu").eval()
    limit = max_episode_steps or MAX_EPISODE_STEPS
    agents = policy.spec.agents
    envs = make_rows(factory, policy.spec, episodes * max(1, agents))
    row_count = len(envs)
    layout, game_scores = policy.spec.obs_layout, policy.spec.game_scores
    try:
        obs = [env.reset(seed=evaluation_seed(seed, i // max(1, agents)))[0] for i, env in enumerate(envs)]
        returns = np.zeros(row_count)
        lengths = np.zeros(row_count, dtype=np.int64)
        active = np.ones(row_count, dtype=bool)
        since_reward = np.zeros(row_count, dtype=np.int64)
        stalled = 0
        torch.manual_seed(evaluation_seed(seed))
        # A recurrent policy's state per env, reset where an episode (or a game's life) begins.
        state = cpu_policy.core.initial_state(row_count) if cpu_policy.core is not None else None
        starts = np.ones(row_count, dtype=bool)
        with torch.inference_mode():
            while active.any():
                live = np.flatnonzero(active)
                stacked = layout.stack([obs[i] for i in live])
                if policy.spec.masked:
                    env_masks.check(
                        stacked[MASK_KEY],
                        policy.spec.action_dims,
                        functools.partial(_episode_step, policy, live, lengths),
                    )
                batch = map_obs(torch.from_numpy, stacked)
                if state is None:
                    actions = cpu_policy.act(batch, deterministic=deterministic).numpy()
                else:
                    rows = torch.from_numpy(live)
                    action_tensor, _, _, state[rows] = cpu_policy.step(
                        batch, state[rows], torch.from_numpy(starts[live]), deterministic=deterministic
                    )
                    actions = action_tensor.numpy()
                    starts[live] = False
                env_actions = policy.spec.to_env_actions(actions)
                if agents:
                    _step_groups(envs, live, env_actions, agents)
                for i, env_action in zip(live, env_actions):
                    next_obs, reward, terminated, truncated, info = envs[i].step(env_action)
                    returns[i] += reward
                    lengths[i] += 1
                    obs[i] = next_obs
                    if not game_scores:
                        if terminated or truncated or lengths[i] >= limit:
                            active[i] = False
                        continue
                    since_reward[i] = 0 if reward != 0 else since_reward[i] + 1
                    game = game_result(info)
                    if game is not None or since_reward[i] >= STALL_STEPS or lengths[i] >= limit:
                        returns[i], lengths[i] = game or (info[GAME_SCORE], info[GAME_LENGTH])
                        stalled += game is None
                        active[i] = False
                    elif terminated or truncated:  # a life lost: the game goes on
                        obs[i] = envs[i].reset()[0]
                        starts[i] = True
    finally:
        for env in envs:
            env.close()
    if stalled:
        warnings.warn(
            f"prl: {stalled} of {episodes} evaluation games of {policy.spec.name} scored nothing for "
            f"{STALL_STEPS} steps and were ended there, counted with their score so far.",
            stacklevel=2,
        )
    team = returns.reshape(episodes, -1).sum(axis=1) if agents else None
    return {
        **(
            {
                "team_returns": team.tolist(),
                "team_return_mean": float(team.mean()),
                "team_return_std": float(team.std()),
            }
            if team is not None
            else {}
        ),
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length_mean": float(lengths.mean()),
        "length_std": float(lengths.std()),
        "length_min": int(lengths.min()),
        "length_max": int(lengths.max()),
        "stalled": int(stalled) if game_scores else 0,
    }
