"""The learner: turns a batch of rollouts into one PPO update of the policy on its device."""

from __future__ import annotations

import math
import time
import warnings
from typing import Optional

import torch

from prl.buffers import Batch
from prl.config import Config, resolve_device
from prl.envs import EnvSpec, probe_env
from prl.errors import ConfigError
from prl.normalize import RewardScaler
from prl.optim import Adam
from prl.policy import ActorCritic, build_policy
from prl.ppo import compute_gae, explained_variance, normalize_advantages, ppo_loss
from prl.rnd import RND

LOSS_STATS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")


class Learner:
    """Owns the policy, the optimizer and the running statistics, and runs PPO updates.

    Args:
        config: the run's options; `config.ppo` holds the update's hyperparameters.
        spec: the env's spaces; probed from `config.env` when not given.

    The policy lives on `device` (CUDA when available and `config.device` is auto). Each
    `update(batch)` computes GAE, runs the PPO epochs, then merges the batch's observations
    into the normalizer, so that the next rollouts use the statistics the update ends with.
    """

    def __init__(self, config: Config, spec: Optional[EnvSpec] = None):
        self.config = config
        self.spec = spec if spec is not None else probe_env(config)
        self.device = torch.device(resolve_device(config))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device {config.device!r} was asked for but torch sees no CUDA device; use --device cpu."
            )
        torch.set_num_threads(config.learner_threads)
        # Adam's second moments and tiny gradients can underflow into subnormal floats, which x86
        # CPUs compute up to 100 times slower (seen doubling an update's time on synthetic data).
        torch.set_flush_denormal(True)
        torch.manual_seed(config.seed)
        ppo = config.ppo
        self.policy: ActorCritic = build_policy(self.spec, config.policy, ppo.normalize_obs, ppo.obs_clip).to(
            self.device
        )
        self.rnd: Optional[RND] = None
        self.int_scaler: Optional[RewardScaler] = None
        trainable = list(self.policy.parameters())
        if ppo.rnd:
            self.rnd = RND(self.spec.obs_dim, config.policy.hidden_sizes, config.policy.activation).to(self.device)
            # Intrinsic returns are non-episodic and their scale only matters relatively: no clip.
            self.int_scaler = RewardScaler(config.num_envs, ppo.int_gamma, clip=float("inf"))
            trainable += [p for p in self.rnd.parameters() if p.requires_grad]
        self.optimizer = Adam(trainable, lr=ppo.lr, eps=ppo.adam_eps)
        self.reward_scaler = RewardScaler(config.num_envs, ppo.gamma, ppo.reward_clip) if ppo.normalize_reward else None
        self.generator = torch.Generator().manual_seed(config.seed)
        self.updates = 0
        self.env_steps = 0

    def current_lr(self) -> float:
        """The learning rate for the next update (linearly annealed over the run when enabled)."""
        ppo = self.config.ppo
        if not ppo.anneal_lr:
            return ppo.lr
        return ppo.lr * max(0.0, 1.0 - self.env_steps / self.config.steps)

    def update(self, batch: Batch) -> dict:
        """Run one PPO update on `batch` and return its statistics (losses, KL, clip fraction, ...)."""
        start = time.perf_counter()
        ppo = self.config.ppo
        batch = Batch(*(t.to(self.device) for t in batch))
        steps, num_envs = batch.rewards.shape
        rewards = batch.rewards
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, batch.terminated | batch.truncated)
        with torch.no_grad():
            advantages, returns = compute_gae(
                rewards, batch.values, batch.terminated, batch.truncated, batch.final_values, ppo.gamma, ppo.gae_lambda
            )
        b_obs = batch.obs[:-1].reshape(steps * num_envs, -1)
        b_actions = batch.actions.reshape(steps * num_envs, -1)
        b_logprobs = batch.logprobs.reshape(-1)
        b_values = batch.values[:-1].reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        intrinsic_stats = {}
        if self.rnd is not None:
            int_advantages, int_returns, intrinsic_stats = self._intrinsic(batch)
            b_advantages = ppo.ext_coef * b_advantages + ppo.int_coef * int_advantages.reshape(-1)
            b_int_returns = int_returns.reshape(-1)
            b_next_obs = batch.obs[1:].reshape(steps * num_envs, -1)

        lr = self.current_lr()
        self.optimizer.lr = lr
        last_good = self.optimizer.snapshot()
        non_finite = False
        size = b_obs.shape[0]
        totals = dict.fromkeys(LOSS_STATS, 0.0)
        minibatches = 0
        epochs_run = 0
        # Near-equal minibatches that cover the whole batch, so no sample is left out of an epoch.
        num_minibatches = max(1, round(size / ppo.minibatch_size))
        for _ in range(ppo.epochs):
            order = torch.randperm(size, generator=self.generator).to(self.device)
            epoch_kl = 0.0
            epoch_minibatches = 0
            for mb in order.tensor_split(num_minibatches):
                _, new_logprob, entropy, new_values = self.policy.get_action_and_value(b_obs[mb], b_actions[mb])
                mb_advantages = normalize_advantages(b_advantages[mb]) if ppo.norm_adv else b_advantages[mb]
                parts = ppo_loss(
                    new_logprob,
                    b_logprobs[mb],
                    mb_advantages,
                    new_values,
                    b_values[mb],
                    b_returns[mb],
                    entropy,
                    ppo.clip_coef,
                    ppo.vf_coef,
                    ppo.ent_coef,
                    ppo.clip_vloss,
                )
                loss = parts.loss
                if self.rnd is not None:
                    int_values = self.rnd.intrinsic_value(self.policy.obs_normalizer(b_obs[mb]))
                    int_value_loss = 0.5 * (int_values - b_int_returns[mb]).pow(2).mean()
                    rnd_loss = self.rnd.predictor_loss(b_next_obs[mb], ppo.rnd_update_fraction, self.generator)
                    loss = loss + ppo.vf_coef * int_value_loss + rnd_loss
                    totals["rnd_loss"] = totals.get("rnd_loss", 0.0) + float(rnd_loss.detach())
                    totals["int_value_loss"] = totals.get("int_value_loss", 0.0) + float(int_value_loss.detach())
                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = self.optimizer.clip_grad_norm(ppo.max_grad_norm)
                if not (math.isfinite(float(loss.detach())) and math.isfinite(grad_norm)):
                    non_finite = True
                    break
                self.optimizer.step()
                for name in LOSS_STATS:
                    totals[name] += float(getattr(parts, name).detach())
                epoch_kl += float(parts.approx_kl)
                epoch_minibatches += 1
            minibatches += epoch_minibatches
            epochs_run += 1
            if non_finite:
                break
            if ppo.target_kl is not None and epoch_kl / epoch_minibatches > ppo.target_kl:
                break
        if non_finite:
            # Keep the last good weights: this update's steps are undone and its statistics not merged.
            self.optimizer.restore(last_good)
            warnings.warn(
                f"prl: update {self.updates + 1} produced a non-finite loss or gradient; "
                "its changes were discarded and the last good weights kept.",
                stacklevel=2,
            )
        else:
            self.policy.obs_normalizer.update(b_obs)
        self.updates += 1
        self.env_steps += size
        stats = {name: total / max(1, minibatches) for name, total in totals.items()}
        stats["skipped_update"] = int(non_finite)
        stats.update(intrinsic_stats)
        stats.update(
            policy_lag=int(self.updates - 1 - batch.policy_versions.min()),
            explained_variance=explained_variance(b_values, b_returns),
            lr=lr,
            epochs=epochs_run,
            learn_s=time.perf_counter() - start,
        )
        return stats

    def _intrinsic(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """RND's intrinsic advantages and returns [T, N] for a batch (non-episodic), and their statistics."""
        ppo = self.config.ppo
        steps, num_envs = batch.rewards.shape
        next_obs = batch.obs[1:].reshape(steps * num_envs, -1)
        with torch.no_grad():
            self.rnd.obs_normalizer.update(next_obs)
            raw = self.rnd.prediction_error(next_obs).reshape(steps, num_envs)
            never = torch.zeros_like(raw, dtype=torch.bool)
            rewards = self.int_scaler(raw, never)
            policy_input = self.policy.obs_normalizer(batch.obs.reshape((steps + 1) * num_envs, -1))
            values = self.rnd.intrinsic_value(policy_input).reshape(steps + 1, num_envs)
            advantages, returns = compute_gae(
                rewards, values, never, never, torch.zeros_like(raw), ppo.int_gamma, ppo.gae_lambda
            )
        return (
            advantages,
            returns,
            {"intrinsic_reward": float(raw.mean()), "intrinsic_reward_scaled": float(rewards.mean())},
        )

    def state_dict(self) -> dict:
        """Everything needed to continue training: policy, optimizer, statistics, counters, RNG."""
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
            "rnd": self.rnd.state_dict() if self.rnd is not None else None,
            "int_scaler": self.int_scaler.state_dict() if self.int_scaler is not None else None,
            "generator": self.generator.get_state(),
            "updates": self.updates,
            "env_steps": self.env_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reward_scaler is not None and state["reward_scaler"] is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        if self.rnd is not None:
            if state.get("rnd") is None:
                raise ConfigError("the checkpoint was trained without RND; resume without --rnd.")
            self.rnd.load_state_dict(state["rnd"])
            self.int_scaler.load_state_dict(state["int_scaler"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
        self.env_steps = int(state["env_steps"])
