"""The original program's front, `PPO` and `AsyncPPO`, running on prl's workers and learner.

Code written for the single-process "async PPO" script moves to prl by changing its imports
to `from prl import PPO, AsyncPPO`. The argument names and meanings are kept; they map onto
`prl.Config` as the docstrings say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import cloudpickle
import gymnasium as gym
import torch

from prl.checkpoint import save_checkpoint
from prl.config import from_flat
from prl.envs import CONTINUOUS, EnvSpec, probe_env
from prl.errors import ConfigError

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
        observ_dim: size of an observation; checked against the env.
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
    ):
        self.is_continuous, self.observ_dim, self.action_dim = bool(is_continuous), int(observ_dim), int(action_dim)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        self.options: dict[str, Any] = dict(
            action_scale=action_scaling,
            lr=lr,
            clip_coef=policy_clip,
            epochs=k_epochs,
            gae_lambda=GAE_lambda,
            minibatch_size=mini_batch_size,
            gamma=gamma,
        )
        if use_RND:
            self.options.update(rnd=True, int_coef=beta)
        self.policy: Optional[torch.nn.Module] = None
        self.pending_weights: Optional[dict] = None
        self.config = None

    def check_env(self, spec: EnvSpec) -> None:
        """Raise ConfigError naming the argument that does not match the env."""
        continuous = spec.action_kind == CONTINUOUS
        if continuous != self.is_continuous:
            kind = "a continuous (Box)" if continuous else "a discrete"
            raise ConfigError(f"{spec.name} has {kind} action space; pass is_continuous={continuous}.")
        if spec.obs_dim != self.observ_dim:
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
        save_checkpoint(folder / WEIGHTS_FILE, {"policy": self.policy.state_dict(), "options": dict(self.options)})

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
        from prl.training import run_training

        config = self.config()
        spec = probe_env(config)
        self.ppo.check_env(spec)
        summary, learner = run_training(config, spec, initial_policy=self.ppo.pending_weights)
        self.ppo.policy = learner.policy
        self.ppo.pending_weights = None
        self.ppo.config = config
        return summary
