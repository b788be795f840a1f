"""The original program's front, `PPO` and `AsyncPPO`, running on prl's workers and learner.

Code written for the single-process "async PPO" script moves to prl by changing its imports
to `from prl import PPO, AsyncPPO`. The argument names and meanings are kept; they map onto
`prl.Config` as the docstrings say. `PPO` also serves the original's custom loop
(`get_action`, `memory`, `learn`; see `prl.compat.custom_loop`), which runs in one process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import cloudpickle
import gymnasium as gym
import numpy as np
import torch

from prl.collection.buffers import Batch
from prl.compat.custom_loop import Column, EpisodeMemory
from prl.config import from_flat
from prl.envs.factory import probe_env
from prl.envs.spec import CONTINUOUS, EnvSpec, spec_from_spaces
from prl.errors import ConfigError
from prl.run.checkpoint import save_checkpoint

WEIGHTS_FILE = "policy.pt"
"""The file `save_weights` writes into its folder."""


class SpecFactory:
    """Rebuilds an env made by `gym.make` from its spec (same id, kwargs and wrappers such as the time limit)."""

    def __init__(self, spec: gym.envs.registration.EnvSpec):
        self.spec = spec
        self.__name__ = spec.id

    def __call__(self) -> gym.Env:
        return gym.make(self.spec)


class PickledEnvFactory:
    """Rebuilds an env that has no spec from a cloudpickled copy of the instance."""

    def __init__(self, env: gym.Env):
        self.blob = cloudpickle.dumps(env)
        self.__name__ = type(env.unwrapped).__name__

    def __call__(self) -> gym.Env:
        return cloudpickle.loads(self.blob)


def env_source(env: Union[str, gym.Env]):
    """What prl's config takes for `env`: an id stays an id, an instance becomes a factory for copies of it."""
    if isinstance(env, str):
        return env
    if not isinstance(env, gym.Env):
        raise ConfigError(f"env must be a gymnasium.Env or an id, got {type(env).__name__}.")
    return SpecFactory(env.spec) if env.spec is not None else PickledEnvFactory(env)


class PPO:
    """PPO settings in the original program's terms, and the policy once trained.

    Args:
        is_continuous: True for a Box action space, False for Discrete.
        observ_dim: size of an observation; checked against the env when its observations are
            flat vectors (images, Dict and Tuple observations are encoded from their space, see
            `prl.envs.observations`, and this number is not used for them).
        action_dim: number of discrete actions, or size of a continuous action; checked against the env.
        action_scaling: continuous actions are multiplied by this and clipped to the bounds
            (prl's `action_scale`); None maps [-1, 1] onto the bounds.
        lr: Adam learning rate.
        policy_clip: PPO clipping range (`clip_coef`).
        k_epochs: passes over each batch (`epochs`).
        GAE_lambda: lambda of GAE (`gae_lambda`).
        batch_size: env steps per update; divided among the envs as the rollout length.
        mini_batch_size: samples per gradient step (`minibatch_size`).
        gamma: discount factor.
        use_RND: add Random Network Distillation intrinsic rewards (`rnd`).
        beta: weight of the intrinsic advantages (`int_coef`).
        seed: seeds the network and the action sampling of the custom loop.

    In the custom loop, `get_action(states)` samples actions, the loop moves its transitions
    into `memory`, and `learn()` runs one PPO update on all of them (GAE over each env's own
    episodes, then `k_epochs` passes in minibatches of `mini_batch_size`) and empties it.
    The learning rate stays constant there, since the loop's length is its own, and the value
    loss is clipped with `policy_clip` as the policy's is.
    """

    def __init__(
        self,
        is_continuous: bool,
        observ_dim: int,
        action_dim: int,
        action_scaling: Optional[float] = None,
        lr: float = 3e-4,
        policy_clip: float = 0.2,
        k_epochs: int = 10,
        GAE_lambda: float = 0.95,
        batch_size: int = 2048,
        mini_batch_size: int = 64,
        gamma: float = 0.99,
        use_RND: bool = False,
        beta: float = 0.001,
        seed: int = 1,
    ):
        self.is_continuous, self.observ_dim, self.action_dim = bool(is_continuous), int(observ_dim), int(action_dim)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        if self.observ_dim < 1 or self.action_dim < 1:
            raise ConfigError(f"observ_dim and action_dim must be at least 1, got {observ_dim} and {action_dim}.")
        self.options: dict[str, Any] = dict(
            action_scale=action_scaling,
            lr=lr,
            clip_coef=policy_clip,
            epochs=k_epochs,
            gae_lambda=GAE_lambda,
            minibatch_size=mini_batch_size,
            gamma=gamma,
            # The original program normalized nothing; its settings were tuned that way.
            normalize_obs=False,
            normalize_reward=False,
        )
        if use_RND:
            self.options.update(rnd=True, int_coef=beta)
        self.seed = int(seed)
        self.policy: Optional[torch.nn.Module] = None
        self.pending_weights: Optional[dict] = None
        self.config = None
        self.memory = EpisodeMemory()
        self._loop_learner = None

    def check_env(self, spec: EnvSpec) -> None:
        """Raise ConfigError naming the argument that does not match the env."""
        if spec.agents:
            raise ConfigError(
                f"{spec.name} is a PettingZoo env with {spec.agents} agents, and AsyncPPO, the original program's "
                "front, steps single-agent envs; train it with prl.train or scripts/train.py, one row per agent."
            )
        if spec.masked:
            raise ConfigError(
                f"{spec.name} gives an action mask, and AsyncPPO, the original program's front, acts without "
                "one; train it with prl.train or scripts/train.py, which act within the mask."
            )
        continuous = spec.action_kind == CONTINUOUS
        if continuous != self.is_continuous:
            kind = "a continuous (Box)" if continuous else "a discrete"
            raise ConfigError(f"{spec.name} has {kind} action space; pass is_continuous={continuous}.")
        if spec.flat_obs and spec.obs_dim != self.observ_dim:
            raise ConfigError(
                f"observ_dim is {self.observ_dim}, but {spec.name}'s observations have {spec.obs_dim} values; pass observ_dim={spec.obs_dim}."
            )
        env_actions = spec.action_dim if continuous else int(sum(spec.action_dims))
        if env_actions != self.action_dim:
            raise ConfigError(
                f"action_dim is {self.action_dim}, but {spec.name} has {env_actions} {'action dimensions' if continuous else 'actions'}; pass action_dim={env_actions}."
            )

    def save_weights(self, path: Union[str, Path]) -> None:
        """Write the trained policy (and its settings) into the folder `path`, creating it if needed."""
        if self.policy is None:
            raise RuntimeError(
                "there are no weights to save yet: train with AsyncPPO(...).run() or load_weights first."
            )
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        weights = {"policy": self.policy.state_dict(), "options": dict(self.options)}
        save_checkpoint(folder / WEIGHTS_FILE, weights, keep_previous=False)  # the user's folder gets one file

    def load_weights(self, path: Union[str, Path]) -> None:
        """Read weights written by `save_weights`; they are used from the next `run()` on (and at once if trained)."""
        file = Path(path) / WEIGHTS_FILE
        if not file.exists():
            raise FileNotFoundError(f"no saved weights at {file}; pass the folder given to save_weights.")
        payload = torch.load(file, map_location="cpu", weights_only=True)
        if self.policy is not None:
            self.policy.load_state_dict(payload["policy"])
        else:
            self.pending_weights = payload["policy"]

    def starting_weights(self) -> Optional[dict]:
        """The weights the next run or loop starts from: loaded ones, else the trained policy's, else None."""
        if self.pending_weights is not None:
            return self.pending_weights
        return None if self.policy is None else self.policy.state_dict()

    def loop_learner(self):
        """The single-process learner behind `get_action` and `learn`, built on first use."""
        if self._loop_learner is None:
            from prl.learning.learner import Learner

            obs_space = gym.spaces.Box(-np.inf, np.inf, (self.observ_dim,), np.float32)
            if self.is_continuous:
                action_space = gym.spaces.Box(-np.inf, np.inf, (self.action_dim,), np.float32)
            else:
                action_space = gym.spaces.Discrete(self.action_dim)
            spec = spec_from_spaces("custom loop", obs_space, action_space, self.options["action_scale"])
            batch = max(self.batch_size, self.options["minibatch_size"])
            config = from_flat(
                dict(
                    env=spec.name,
                    workers=1,
                    envs_per_worker=1,
                    rollout_steps=batch,
                    steps=max(batch, 2**62),
                    seed=self.seed,
                    anneal_lr=False,
                    # The loop learns on whole episodes of every env at once (32 x 500 = 16,000
                    # steps of CartPole, k_epochs passes), with a constant learning rate: keeping
                    # the value estimates within policy_clip of the acting ones stops those late
                    # updates from undoing a solved policy, as CleanRL's PPO does by default.
                    clip_vloss=True,
                    progress=False,
                    eval_episodes=0,
                    **self.options,
                )
            )
            learner = Learner(config, spec)
            weights = self.starting_weights()
            if weights is not None and any(name.startswith("encoder.") for name in weights):
                raise ConfigError(
                    "these weights were trained on image or Dict observations, and get_action and learn "
                    "take flat vectors; train such envs with AsyncPPO(...).run() or prl.train."
                )
            if weights is not None:
                learner.policy.load_state_dict(weights)
            self._loop_learner, self.policy, self.config, self.pending_weights = learner, learner.policy, config, None
        return self._loop_learner

    def get_action(self, states: Union[torch.Tensor, np.ndarray]) -> np.ndarray:
        """Sample one action per row of `states` with the current policy, as the env takes them.

        Returns int64 indices [B] for discrete actions, or float32 actions [B, action_dim]
        (multiplied by `action_scaling` when set; `EnvVectorizer` clips them to the bounds).
        """
        learner = self.loop_learner()
        obs = torch.as_tensor(np.asarray(states), dtype=torch.float32)
        if obs.dim() > 1 and len(obs) == 0:  # no env is running
            shape, dtype = ((0, self.action_dim), np.float32) if self.is_continuous else ((0,), np.int64)
            return np.zeros(shape, dtype)
        obs = obs.reshape(len(obs), -1) if obs.dim() > 1 else obs.reshape(1, -1)
        if obs.shape[1] != self.observ_dim:
            raise ValueError(
                f"get_action got states with {obs.shape[1]} values each, but observ_dim is {self.observ_dim}; "
                "pass one row per running env, or create PPO with the env's observation size."
            )
        raw = learner.policy.act(obs.to(learner.device), deterministic=False).cpu().numpy()
        if not self.is_continuous:
            return raw[:, 0].astype(np.int64)
        scale = self.options["action_scale"]
        return (raw * scale if scale is not None else raw).astype(np.float32)

    def learn(self) -> dict:
        """Run one PPO update on every transition in `memory`, empty it, and return the update's statistics."""
        if len(self.memory) == 0:
            raise ValueError(
                "ppo.memory is empty; move the collected transitions in with "
                "utils.buffer_to_target_buffer_transfer(buffer, ppo.memory) before calling learn()."
            )
        learner = self.loop_learner()
        column = self.memory.column()
        if column.actions.shape[1] != learner.spec.action_dim or column.obs.shape[1] != self.observ_dim:
            raise ValueError(
                f"ppo.memory holds states of {column.obs.shape[1]} values and actions of {column.actions.shape[1]}, "
                f"but this PPO expects {self.observ_dim} and {learner.spec.action_dim}; store what get_action returned."
            )
        stats = learner.update(column_batch(learner, column, self.options["action_scale"]))
        self.memory.clear()
        return stats


def column_batch(learner, column: Column, action_scale: Optional[float]) -> Batch:
    """A one-column Batch of the memory's transitions, scored by the learner's current policy (the one that acted)."""
    device = learner.device
    obs = torch.from_numpy(column.obs).to(device)
    actions = torch.from_numpy(column.actions).to(device)
    if learner.spec.is_continuous and action_scale is not None:
        actions = actions / action_scale  # back to the policy's own units, in which it scores them
    truncated = torch.from_numpy(column.truncated).to(device)
    cut = torch.from_numpy(column.truncated.nonzero()[0]).to(device)
    with torch.no_grad():
        _, logprobs, _, values = learner.policy.get_action_and_value(obs[:-1], actions)
        last_value = learner.policy.get_value(obs[-1:])
        final_values = torch.zeros_like(values)
        if len(cut):  # only truncated steps bootstrap from a final observation
            final_values[cut] = learner.policy.get_value(torch.from_numpy(column.final_obs).to(device)[cut])
    nan = torch.full((len(column.rewards), 1), float("nan"), device=device)
    return Batch(
        obs=obs.unsqueeze(1),
        actions=actions.unsqueeze(1),
        logprobs=logprobs.unsqueeze(1),
        values=torch.cat([values, last_value]).unsqueeze(1),
        rewards=torch.from_numpy(column.rewards).to(device).unsqueeze(1),
        terminated=torch.from_numpy(column.terminated).to(device).unsqueeze(1),
        truncated=truncated.unsqueeze(1),
        final_values=final_values.unsqueeze(1),
        episode_returns=nan,
        episode_lengths=nan.clone(),
        policy_versions=torch.tensor([learner.updates]),
        worker_ids=torch.zeros(1, dtype=torch.long),
        env_ids=torch.zeros(1, dtype=torch.long),
    )


class AsyncPPO:
    """Trains `ppo` on `env` for `steps` env steps with `num_envs` envs spread over prl's worker processes.

    `env` may be a Gymnasium id or an env made by `gym.make` (rebuilt in every worker from its
    spec), or any env instance (sent to the workers with cloudpickle). The progress bar shows
    env steps, steps/s and the mean episode return.
    """

    def __init__(
        self,
        env: Union[str, gym.Env],
        ppo: PPO,
        num_envs: int,
        steps: int,
        workers: Optional[int] = None,
        seed: int = 1,
    ):
        if num_envs < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}.")
        self.env, self.ppo, self.num_envs, self.steps = env, ppo, int(num_envs), int(steps)
        cores = workers or max(1, min(os.cpu_count() or 1, self.num_envs))
        # The most workers, up to the cores, that split the envs evenly.
        self.workers = max(w for w in range(1, cores + 1) if self.num_envs % w == 0)
        self.seed = seed

    def config(self):
        """The prl Config this run trains with."""
        rollout_steps = max(1, round(self.ppo.batch_size / self.num_envs))
        options = dict(self.ppo.options)
        batch = rollout_steps * self.num_envs
        options["minibatch_size"] = min(options["minibatch_size"], batch)
        return from_flat(
            dict(
                env=env_source(self.env),
                workers=self.workers,
                envs_per_worker=self.num_envs // self.workers,
                rollout_steps=rollout_steps,
                steps=max(self.steps, batch),
                seed=self.seed,
                **options,
            )
        )

    def run(self) -> dict:
        """Train, keep the trained policy in `ppo.policy`, and return the run summary."""
        from prl.run.training import run_training

        config = self.config()
        spec = probe_env(config)
        self.ppo.check_env(spec)
        summary, learner = run_training(config, spec, initial_policy=self.ppo.starting_weights())
        self.ppo.policy = learner.policy
        self.ppo.pending_weights = None
        self.ppo.config = config
        self.ppo._loop_learner = None  # a custom loop after this run starts from the trained weights
        return summary
