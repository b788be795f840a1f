"""Evaluation: run whole episodes with a policy in this process, all envs stepped as one batch."""

from __future__ import annotations

import copy
from typing import Optional

import numpy as np
import torch

from prl.envs import EnvFactory, make_env, seed_for
from prl.observations import map_obs
from prl.policy import ActorCritic

MAX_EPISODE_STEPS = 100_000
"""Safety bound for envs without a time limit: an episode this long is cut and counted as is."""


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
    `returns` and `lengths` lists and the mean, std, min and max of each.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}.")
    cpu_policy = copy.deepcopy(policy).to("cpu").eval()
    limit = max_episode_steps or MAX_EPISODE_STEPS
    envs = [make_env(factory) for _ in range(episodes)]
    layout = policy.spec.obs_layout
    try:
        obs = [env.reset(seed=seed_for(seed, 1 << 30, i))[0] for i, env in enumerate(envs)]
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        active = np.ones(episodes, dtype=bool)
        torch.manual_seed(seed_for(seed, 1 << 30))
        with torch.inference_mode():
            while active.any():
                live = np.flatnonzero(active)
                batch = map_obs(torch.from_numpy, layout.stack([obs[i] for i in live]))
                actions = cpu_policy.act(batch, deterministic=deterministic).numpy()
                for i, env_action in zip(live, policy.spec.to_env_actions(actions)):
                    next_obs, reward, terminated, truncated, _ = envs[i].step(env_action)
                    returns[i] += reward
                    lengths[i] += 1
                    obs[i] = next_obs
                    if terminated or truncated or lengths[i] >= limit:
                        active[i] = False
    finally:
        for env in envs:
            env.close()
    return {
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
    }
