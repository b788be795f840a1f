"""The worker process: steps its envs with a CPU copy of the policy and fills trajectory slots.

`worker_main` is the process entry point; the protocol it follows is written in `prl.pool`.
`RolloutCollector` holds the envs and the step loop, and also runs in-process for tests.
"""

from __future__ import annotations

import math
import signal
import traceback
from typing import Optional

import numpy as np
import psutil
import torch

from prl.buffers import SharedWeights, TrajectoryBuffer
from prl.config import PolicyConfig
from prl.envs import EnvFactory, EnvSpec, make_env, seed_for, spec_from_spaces
from prl.errors import ConfigError
from prl.policy import ActorCritic, build_policy

POLL_S = 0.5
"""How often a waiting worker wakes to check that its parent is still alive."""


class RolloutCollector:
    """A worker's envs, its policy copy and the episode state that carries across rollouts."""

    def __init__(
        self, factory: EnvFactory, spec: EnvSpec, policy: ActorCritic, num_envs: int, seed: int, worker_index: int
    ):
        self.spec = spec
        self.policy = policy
        self.envs = [make_env(factory) for _ in range(num_envs)]
        env_spec = spec_from_spaces(
            spec.name, self.envs[0].observation_space, self.envs[0].action_space, spec.action_scale
        )
        if env_spec.obs_shape != spec.obs_shape or env_spec.action_dims != spec.action_dims:
            raise ConfigError(
                f"the env built in worker {worker_index} has different spaces from the one probed at start; "
                "make the env callable return the same spaces every time."
            )
        first_obs = []
        for index, env in enumerate(self.envs):
            env_seed = seed_for(seed, worker_index, index)
            env.action_space.seed(env_seed)
            obs, _ = env.reset(seed=env_seed)
            first_obs.append(np.asarray(obs, dtype=np.float32).reshape(-1))
        self.obs = np.stack(first_obs)
        self.episode_return = np.zeros(num_envs, dtype=np.float64)
        self.episode_length = np.zeros(num_envs, dtype=np.int64)

    @torch.inference_mode()
    def collect(self, views: dict[str, np.ndarray]) -> None:
        """Run one rollout, writing every field of the slot behind `views` (see `TrajectoryBuffer`)."""
        obs, rewards = views["obs"], views["rewards"]
        terminated, truncated = views["terminated"], views["truncated"]
        final_values, episode_returns, episode_lengths = (
            views["final_values"],
            views["episode_returns"],
            views["episode_lengths"],
        )
        final_values.fill(0.0)
        episode_returns.fill(math.nan)
        episode_lengths.fill(math.nan)
        obs[0] = self.obs
        steps = rewards.shape[0]
        for t in range(steps):
            action, logprob, _, value = self.policy.get_action_and_value(torch.from_numpy(obs[t]))
            action_np = action.numpy()
            views["actions"][t] = action_np
            views["logprobs"][t] = logprob.numpy()
            views["values"][t] = value.numpy()
            truncated_envs, truncated_obs = [], []
            for i, (env, env_action) in enumerate(zip(self.envs, self.spec.to_env_actions(action_np))):
                next_obs, reward, term, trunc, _ = env.step(env_action)
                self.episode_return[i] += reward
                self.episode_length[i] += 1
                rewards[t, i] = reward
                terminated[t, i] = term
                truncated[t, i] = trunc and not term
                if term or trunc:
                    if not term:
                        truncated_envs.append(i)
                        truncated_obs.append(np.asarray(next_obs, dtype=np.float32).reshape(-1))
                    episode_returns[t, i] = self.episode_return[i]
                    episode_lengths[t, i] = self.episode_length[i]
                    self.episode_return[i] = 0.0
                    self.episode_length[i] = 0
                    next_obs, _ = env.reset()
                obs[t + 1, i] = np.asarray(next_obs, dtype=np.float32).reshape(-1)
            if truncated_envs:
                final_values[t, truncated_envs] = self.policy.get_value(
                    torch.from_numpy(np.stack(truncated_obs))
                ).numpy()
        views["values"][steps] = self.policy.get_value(torch.from_numpy(obs[steps])).numpy()
        self.obs = obs[steps].copy()

    def close(self) -> None:
        """Close every env, ignoring errors from envs that are already broken."""
        for env in self.envs:
            try:
                env.close()
            except Exception:
                pass


class ParentGone(Exception):
    """The process that started this worker has exited."""


def _wait_for_message(conn, parent: psutil.Process):
    """Block until the parent sends something, waking every POLL_S to check it is still alive."""
    while not conn.poll(POLL_S):
        if not parent.is_running():
            raise ParentGone()
    return conn.recv()


def worker_main(
    worker_index: int,
    conn,
    parent_pid: int,
    factory: EnvFactory,
    spec: EnvSpec,
    policy_config: PolicyConfig,
    normalize_obs: bool,
    obs_clip: float,
    buffer: TrajectoryBuffer,
    weights: SharedWeights,
    envs_per_worker: int,
    seed: int,
) -> None:
    """Entry point of a worker process; follows the protocol written in `prl.pool`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    torch.set_num_threads(1)
    torch.manual_seed(seed_for(seed, worker_index, 1 << 20))
    collector: Optional[RolloutCollector] = None
    try:
        parent = psutil.Process(parent_pid)
        policy = build_policy(spec, policy_config, normalize_obs, obs_clip)
        held_version = weights.load_into(policy, -1)
        collector = RolloutCollector(factory, spec, policy, envs_per_worker, seed, worker_index)
        env_ids = torch.arange(envs_per_worker) + worker_index * envs_per_worker
        conn.send(("ready", worker_index, None))
        while True:
            slot = _wait_for_message(conn, parent)
            if slot is None:
                break
            held_version = weights.load_into(policy, held_version)
            collector.collect(buffer.numpy_views(slot))
            buffer.policy_versions[slot] = held_version
            buffer.worker_ids[slot] = worker_index
            buffer.env_ids[slot] = env_ids
            conn.send(("slot", worker_index, slot))
    except ParentGone:
        pass
    except BaseException as error:
        try:
            conn.send(("error", worker_index, (type(error).__name__, str(error), traceback.format_exc())))
        except (OSError, EOFError):
            pass
    finally:
        if collector is not None:
            collector.close()
        conn.close()
