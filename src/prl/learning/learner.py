"""The learner: turns a batch of rollouts into one PPO update of the policy on its device."""

from __future__ import annotations

import copy
import math
import time
import warnings
from typing import NamedTuple, Optional

import torch

from prl.collection.buffers import Batch
from prl.config import Config, concrete_device, resolve_device
from prl.envs.factory import probe_env
from prl.envs.observations import Observations, map_obs
from prl.envs.presets import normalizes_rewards
from prl.envs.spec import EnvSpec
from prl.errors import ConfigError
from prl.learning.optim import Adam
from prl.learning.ppo import (
    compute_gae,
    compute_vtrace,
    explained_variance,
    normalize_advantages,
    ppo_loss,
    weighted_mean,
)
from prl.learning.rnd import RND
from prl.learning.samples import Minibatch, Samples
from prl.metrics import LOSS_TERMS, RND_TERMS
from prl.nn.encoders import reads_pixels
from prl.nn.normalize import RewardScaler
from prl.nn.policy import ActorCritic, build_policy, place_policy


def step_versions(batch: Batch) -> torch.Tensor:
    """[T, N] the weight version each step acted with: the batch's own, or each rollout's for all its steps."""
    if batch.step_versions is not None:
        return batch.step_versions
    steps, num_envs = batch.rewards.shape
    per_column = batch.policy_versions.repeat_interleave(num_envs // batch.policy_versions.numel())
    return per_column.to(batch.rewards.device).expand(steps, num_envs)


class Prepared(NamedTuple):
    """A batch made ready for the epochs: the loss inputs, and what the update's statistics read."""

    samples: Samples
    """Every sample's loss inputs, flattened over [time, env]."""
    raw_obs: Observations
    """[B, D] raw observations (a dict of [B, *leaf shape] for other layouts), for the normalizer."""
    batch_stats: dict
    """What the update logs about the batch itself: its policy lag, RND's reward statistics, the importance ratios."""
    initial_states: Optional[torch.Tensor] = None
    """[C x N, state_size] a recurrent policy's state where each of its sequences starts: chunk c of env n
    at row c x N + n (C = 1 without bptt_steps: each env's state at the rollout's start). None without a memory."""
    steps: int = 0
    """The length of a recurrent policy's sequences: T, the rollout's, or bptt_steps."""
    envs: int = 0
    """N, the batch's envs."""


class Learner:
    """Owns the policy, the optimizer and the running statistics, and runs PPO updates.

    Args:
        config: the run's options; `config.ppo` holds the update's hyperparameters.
        spec: the env's spaces; probed from `config.env` when not given.

    The policy lives on `device` (with `config.device` auto: CUDA for a policy that reads
    pixel images where there is a GPU, else the CPU; see `prl.config.default_device`). Each
    `update(batch)` computes GAE, runs the PPO epochs, then merges the batch's observations
    into the normalizer, so that the next rollouts use the statistics the update ends with.
    """

    def __init__(self, config: Config, spec: Optional[EnvSpec] = None):
        self.config = config
        self.spec = spec if spec is not None else probe_env(config)
        self.device = concrete_device(resolve_device(config, reads_pixels(self.spec.obs_layout)))
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
        policy = build_policy(self.spec, config.policy, ppo.normalize_obs, ppo.obs_clip)
        self.policy: ActorCritic = place_policy(policy, self.device)
        self.rnd: Optional[RND] = None
        self.int_scaler: Optional[RewardScaler] = None
        trainable = list(self.policy.parameters())
        if ppo.rnd:
            if not self.spec.flat_obs:
                raise ConfigError(
                    f"--rnd works on flat vector observations, and {self.spec.name}'s are images or a Dict; "
                    "train without --rnd, or flatten the observations (gymnasium.wrappers.FlattenObservation)."
                )
            self.rnd = RND(self.spec.obs_dim, config.policy.hidden_sizes, config.policy.activation).to(self.device)
            # Intrinsic returns are non-episodic and their scale only matters relatively: no clip.
            self.int_scaler = RewardScaler(config.num_envs, ppo.int_gamma, clip=float("inf"))
            trainable += [p for p in self.rnd.parameters() if p.requires_grad]
        self.optimizer = Adam(trainable, lr=ppo.lr, eps=ppo.adam_eps)
        scale_rewards = normalizes_rewards(ppo.normalize_reward, self.spec)
        self.reward_scaler = RewardScaler(config.num_envs, ppo.gamma, ppo.reward_clip) if scale_rewards else None
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
        batch = batch.to(self.device)
        statistics = self._running_statistics()
        last_good = self.optimizer.snapshot()
        sampler_state = self.generator.get_state()
        try:
            return self._update(batch, start, statistics, last_good)
        except BaseException:
            # An error mid-update (CUDA out of memory, an interrupt) leaves the learner as it was
            # before the update, so that the run can be saved whole and resumed from there.
            self.optimizer.restore(last_good)
            self._restore_running_statistics(statistics)
            self.generator.set_state(sampler_state)
            raise

    def _update(self, batch: Batch, start: float, statistics: list, last_good: tuple) -> dict:
        """`update`'s body, given the state before it (which a non-finite loss, or a failure, puts back)."""
        ppo = self.config.ppo
        samples, raw_obs, batch_stats, initial_states, steps, envs = self._prepare(batch)
        lr = self.current_lr()
        self.optimizer.lr = lr
        names = LOSS_TERMS + (RND_TERMS if self.rnd is not None else ())
        totals = torch.zeros(len(names), device=self.device)
        gradient_steps = epochs_run = 0
        non_finite = False
        size = len(samples)
        counted = samples.full.weights
        # Every sample left out (too stale, or padding): an update of zero gradients would still move Adam's weights.
        epochs = ppo.epochs if counted is None or bool(counted.any()) else 0
        # Near-equal minibatches that cover the whole batch, so no sample is left out of an epoch; a
        # recurrent policy's are made of whole env sequences, so at most one per env.
        num_minibatches = max(1, round(size / ppo.minibatch_size))
        if initial_states is not None:
            num_minibatches = min(num_minibatches, initial_states.shape[0])
        for _ in range(epochs):
            epoch_totals = torch.zeros_like(totals)
            for mb, mb_states in self._minibatches(size, num_minibatches, initial_states, steps, envs):
                loss, terms = self._minibatch_loss(samples.take(mb), mb_states)
                self.optimizer.zero_grad()
                loss.backward()
                grad_norm = self.optimizer.clip_grad_norm(ppo.max_grad_norm)
                # One host sync per step: the sum is finite only if the loss and the norm both are.
                if not math.isfinite(float(grad_norm + loss.detach())):
                    non_finite = True
                    break
                self.optimizer.step()
                epoch_totals += terms
                gradient_steps += 1
            epochs_run += 1
            totals += epoch_totals
            if non_finite:
                break
            # A whole epoch ran (num_minibatches steps); its mean KL needs a sync, so only when asked for.
            if ppo.target_kl is not None:
                if float(epoch_totals[LOSS_TERMS.index("approx_kl")]) / num_minibatches > ppo.target_kl:
                    break
        if non_finite:
            # Keep the last good weights: this update's steps are undone and its statistics not merged.
            self.optimizer.restore(last_good)
            self._restore_running_statistics(statistics)
            warnings.warn(
                f"prl: update {self.updates + 1} produced a non-finite loss or gradient; "
                "its changes were discarded and the last good weights kept.",
                stacklevel=2,
            )
        else:
            self.policy.update_normalizer(raw_obs)
        self.updates += 1
        self.env_steps += batch.agent_steps
        stats = dict(zip(names, (totals / max(1, gradient_steps)).tolist()))
        stats["skipped_update"] = int(non_finite)
        stats.update(batch_stats)
        stats.update(
            explained_variance=explained_variance(
                *self._counted(samples.full.values, samples.full.returns, samples.full.weights)
            ),
            lr=lr,
            epochs=epochs_run,
            gradient_steps=gradient_steps,
            learn_s=time.perf_counter() - start,
        )
        return stats

    @staticmethod
    def _counted(values: torch.Tensor, returns: torch.Tensor, weights: Optional[torch.Tensor]) -> tuple:
        """`values` and `returns` of the samples that count: all, or a PettingZoo env's live agents' (weight 1)."""
        if weights is None:
            return values, returns
        counted = weights > 0.5
        return values[counted], returns[counted]

    def _running_statistics(self) -> list:
        """Copies of the reward and intrinsic-reward scalers and RND's normalizer, which an update merges its batch into."""
        return [
            (module, copy.deepcopy(module.state_dict()))
            for module in (self.reward_scaler, self.int_scaler, self.rnd.obs_normalizer if self.rnd else None)
            if module is not None
        ]

    def _restore_running_statistics(self, saved: list) -> None:
        """Put back what `_running_statistics` copied, so a discarded batch leaves no trace."""
        for module, state in saved:
            module.load_state_dict(state)

    def _prepare(self, batch: Batch) -> Prepared:
        """Advantages and targets over the batch, then every per-sample input of the loss flattened over [time, env].

        GAE, or with a lag correction (`Config.lag_correction`) GAE weighted by truncated
        importance ratios (clip) or V-trace (vtrace), whose ratios compare the learner's policy
        before this update with the one that acted. The PPO ratio stays against the policy that
        acted, as in Sample Factory's APPO: taken against the learner's policy instead (decoupled
        PPO), async CartPole reached 475 on 2 of 5 seeds (173 to 500), against 5 of 5. Samples acted with
        weights older than `max_policy_lag` updates get weight 0, as a dead agent's padding does.
        """
        ppo = self.config.ppo
        steps, num_envs = batch.rewards.shape
        rewards = batch.rewards
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, batch.terminated | batch.truncated, batch.env_ids)
        with torch.no_grad():
            raw_obs = map_obs(lambda tensor: tensor[:-1].reshape(steps * num_envs, *tensor.shape[2:]), batch.obs)
            # The normalizer's statistics stay fixed until the update ends, so the networks'
            # input is computed once for the whole batch.
            prepared_obs = self.policy.prepare(raw_obs)
            actions = batch.actions.reshape(steps * num_envs, -1)
            lags = self.updates - step_versions(batch)
            weights, batch_stats = self._sample_weights(batch, lags)
            correction = self.config.lag_correction
            episode = (rewards, batch.values, batch.terminated, batch.truncated, batch.final_values)
            if correction == "none":
                advantages, returns = compute_gae(*episode, ppo.gamma, ppo.gae_lambda)
            else:
                log_rhos = self._current_logprobs(prepared_obs, actions, batch) - batch.logprobs
                if correction == "vtrace":
                    advantages, returns = compute_vtrace(
                        *episode, log_rhos, ppo.gamma, ppo.gae_lambda, ppo.rho_bar, ppo.c_bar
                    )
                else:
                    advantages, returns = compute_gae(*episode, ppo.gamma, ppo.gae_lambda)
                    advantages = advantages * log_rhos.exp().clamp(max=ppo.rho_bar)
                batch_stats["importance_ratio"] = float(weighted_mean(log_rhos.exp().reshape(-1), weights))
            advantages = advantages.reshape(-1)
            int_returns: Optional[torch.Tensor] = None
            next_obs: Optional[torch.Tensor] = None
            if self.rnd is not None:
                int_advantages, int_returns, intrinsic_stats = self._intrinsic(batch)
                batch_stats.update(intrinsic_stats)
                advantages = ppo.ext_coef * advantages + ppo.int_coef * int_advantages.reshape(-1)
                int_returns = int_returns.reshape(-1)
                next_obs = batch.obs[1:].reshape(steps * num_envs, -1)
            b_samples = Samples(
                Minibatch(
                    obs=prepared_obs,
                    actions=actions,
                    logprobs=batch.logprobs.reshape(-1),
                    values=batch.values[:-1].reshape(-1),
                    advantages=advantages,
                    returns=returns.reshape(-1),
                    int_returns=int_returns,
                    next_obs=next_obs,
                    episode_starts=None if batch.episode_starts is None else batch.episode_starts.reshape(-1).float(),
                    weights=weights,
                )
            )
            sequence_states, sequence_steps = self._sequence_starts(prepared_obs, batch)
        return Prepared(b_samples, raw_obs, batch_stats, sequence_states, sequence_steps, num_envs)

    def _sample_weights(self, batch: Batch, lags: torch.Tensor) -> tuple[Optional[torch.Tensor], dict]:
        """Each sample's weight in the loss [T x N] (None: all 1), and the batch's policy lag statistics.

        A sample counts unless it is a dead agent's padding or its lag exceeds `max_policy_lag`."""
        live = batch.agent_active
        limit = self.config.ppo.max_policy_lag
        fresh = None if limit is None else lags <= limit
        kept = live if fresh is None else fresh if live is None else live & fresh
        acted = lags if live is None else lags[live]
        stats: dict = {
            "policy_lag": int(acted.max()) if acted.numel() else 0,
            "policy_lag_min": int(acted.min()) if acted.numel() else 0,
            "policy_lag_mean": float(acted.float().mean()) if acted.numel() else 0.0,
        }
        if fresh is not None:
            stale = ~fresh if live is None else ~fresh & live
            stats["stale_fraction"] = float(stale.sum()) / max(1, acted.numel())
        return (None if kept is None else kept.reshape(-1).float()), stats

    def _current_logprobs(self, prepared_obs: Observations, actions: torch.Tensor, batch: Batch) -> torch.Tensor:
        """[T, N] log-probabilities of the batch's actions under the learner's policy as it is (a recurrent one
        replays each env's rollout from its stored initial state)."""
        steps, num_envs = batch.rewards.shape
        logprobs, _, _ = self.policy.score(prepared_obs, actions, batch.initial_states, batch.episode_starts)
        return logprobs.reshape(steps, num_envs)

    def _sequence_starts(self, prepared_obs: Observations, batch: Batch) -> tuple[Optional[torch.Tensor], int]:
        """A recurrent policy's sequences: the state each starts from [C x N, state_size], and their length.

        Without bptt_steps, each env's whole rollout from its stored initial state. With it, chunks
        of bptt_steps, each starting from the state the core reaches there when it replays the
        rollout with the weights before the update: in sync mode, the state acting had.
        """
        steps = batch.rewards.shape[0]
        chunk = self.config.ppo.bptt_steps
        if batch.initial_states is None or chunk is None or chunk >= steps:
            return batch.initial_states, steps
        assert self.policy.core is not None and batch.episode_starts is not None  # a recurrent batch
        features = self.policy.features(prepared_obs).reshape(steps, batch.rewards.shape[1], -1)
        starts = [batch.initial_states]
        for begin in range(0, steps - chunk, chunk):
            end = begin + chunk
            _, state = self.policy.core.replay(features[begin:end], starts[-1], batch.episode_starts[begin:end])
            starts.append(state)
        return torch.cat(starts), chunk

    def _minibatches(self, size: int, count: int, initial_states: Optional[torch.Tensor], steps: int, num_envs: int):
        """One epoch's `count` minibatches: (sample positions, their sequences' initial states or None).

        Without a memory, a random split of every sample. With one, a random split of the
        sequences (chunk c of env n, `Prepared.initial_states`), each minibatch every step of its
        sequences in time-major order (sample position t x N + n).
        """
        if initial_states is None:
            order = torch.randperm(size, generator=self.generator).to(self.device)
            return ((index, None) for index in order.tensor_split(count))
        order = torch.randperm(initial_states.shape[0], generator=self.generator).to(self.device)
        firsts = (order // num_envs) * steps * num_envs + order % num_envs  # each sequence's first sample
        times = torch.arange(steps, device=self.device)[:, None] * num_envs
        return (
            ((times + first[None, :]).reshape(-1), initial_states[sequences])
            for sequences, first in zip(order.tensor_split(count), firsts.tensor_split(count))
        )

    def _minibatch_loss(
        self, mb: Minibatch, initial_states: Optional[torch.Tensor] = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of one minibatch and its logged terms (a detached tensor in the order of LOSS_TERMS, RND_TERMS).

        A recurrent policy's minibatch is whole sequences, replayed from `initial_states`."""
        ppo = self.config.ppo
        episode_starts = None
        if initial_states is not None:
            assert mb.episode_starts is not None  # stored for a recurrent policy
            episode_starts = mb.episode_starts.reshape(-1, initial_states.shape[0]) > 0.5
        new_logprob, entropy, new_values = self.policy.score(mb.obs, mb.actions, initial_states, episode_starts)
        advantages = normalize_advantages(mb.advantages, mb.weights) if ppo.norm_adv else mb.advantages
        parts = ppo_loss(
            new_logprob,
            mb.logprobs,
            advantages,
            new_values,
            mb.values,
            mb.returns,
            entropy,
            ppo.clip_coef,
            ppo.vf_coef,
            ppo.ent_coef,
            ppo.clip_vloss,
            mb.weights,
        )
        loss, terms = parts.loss, [getattr(parts, name) for name in LOSS_TERMS]
        if self.rnd is not None:
            # RND trains on flat observations, and `_prepare` gives it its targets and inputs.
            assert isinstance(mb.obs, torch.Tensor) and mb.int_returns is not None and mb.next_obs is not None
            int_value_loss = 0.5 * (self.rnd.intrinsic_value(mb.obs) - mb.int_returns).pow(2).mean()
            rnd_loss = self.rnd.predictor_loss(mb.next_obs, ppo.rnd_update_fraction, self.generator)
            loss = loss + ppo.vf_coef * int_value_loss + rnd_loss
            terms += [rnd_loss, int_value_loss]
        return loss, torch.stack(terms).detach()

    def _intrinsic(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """RND's intrinsic advantages and returns [T, N] for a batch (non-episodic), and their statistics."""
        ppo = self.config.ppo
        # Called only with RND, which trains on flat observations.
        assert self.rnd is not None and self.int_scaler is not None and isinstance(batch.obs, torch.Tensor)
        steps, num_envs = batch.rewards.shape
        next_obs = batch.obs[1:].reshape(steps * num_envs, -1)
        with torch.no_grad():
            self.rnd.obs_normalizer.update(next_obs)
            raw = self.rnd.prediction_error(next_obs).reshape(steps, num_envs)
            never = torch.zeros_like(raw, dtype=torch.bool)
            rewards = self.int_scaler(raw, never, batch.env_ids)
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
            assert self.int_scaler is not None  # made with the RND
            self.int_scaler.load_state_dict(state["int_scaler"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])
        self.env_steps = int(state["env_steps"])
