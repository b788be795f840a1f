"""Running statistics: observation normalization (travels with the weights) and reward scaling."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def merge_moments(
    mean: torch.Tensor, var: torch.Tensor, count: float, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Merge a batch [B, ...] into running (mean, var, count) with the parallel-variance formula."""
    batch = batch.double()
    batch_mean, batch_var, batch_count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
    delta = batch_mean - mean
    total = count + batch_count
    new_mean = mean + delta * batch_count / total
    new_var = (var * count + batch_var * batch_count + delta.pow(2) * count * batch_count / total) / total
    return new_mean, new_var, total


class ObsNormalizer(nn.Module):
    """Running mean and variance of observations, kept as buffers so they travel with the weights.

    The learner updates them after each PPO update, so every rollout and the update that
    learns from it see the same statistics.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, obs_dim: int, clip: float, enabled: bool):
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.register_buffer("mean", torch.zeros(obs_dim, dtype=torch.float32))
        self.register_buffer("var", torch.ones(obs_dim, dtype=torch.float32))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        return torch.clamp((obs - self.mean) / torch.sqrt(self.var + 1e-8), -self.clip, self.clip)

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Merge a batch of raw observations [B, obs_dim] into the running statistics."""
        if not self.enabled:
            return
        mean, var, count = merge_moments(self.mean.double(), self.var.double(), float(self.count), obs)
        self.mean.copy_(mean)
        self.var.copy_(var)
        self.count.fill_(count)


def repeat_rounds(ids: list[int]) -> list[torch.Tensor]:
    """Column positions grouped so that no group repeats an id: the first column of every id, then the second, ..."""
    seen: dict[int, int] = {}
    rounds: list[list[int]] = []
    for position, env in enumerate(ids):
        count = seen.get(env, 0)
        seen[env] = count + 1
        if count == len(rounds):
            rounds.append([])
        rounds[count].append(position)
    return [torch.tensor(positions, dtype=torch.long) for positions in rounds]


class RewardScaler:
    """Divides rewards by the running std of each env's discounted return (as gymnasium's NormalizeReward).

    State is one running return per env, kept by the env's global id (`Batch.env_ids`); without
    ids, column n is env n.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float):
        self.gamma = gamma
        self.clip = clip
        self.returns = torch.zeros(num_envs, dtype=torch.float64)
        self.mean = torch.zeros((), dtype=torch.float64)
        self.var = torch.ones((), dtype=torch.float64)
        self.count = 1e-4

    def __call__(
        self, rewards: torch.Tensor, episode_ended: torch.Tensor, env_ids: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Scale a [T, N] block of rewards; `episode_ended` [T, N] resets each env's running return.

        `env_ids` [N] names each column's env. One env may have several columns (consecutive
        rollouts in one async batch), taken in column order: each continues the return of the one before.
        """
        rewards64 = rewards.detach().to("cpu", torch.float64)
        ended = episode_ended.detach().to("cpu", torch.float64)
        seen = torch.empty_like(rewards64)
        ids = torch.arange(rewards64.shape[1]) if env_ids is None else env_ids.detach().cpu()
        for columns in repeat_rounds(ids.tolist()):
            envs = ids[columns]
            returns = self.returns[envs]
            for t in range(rewards64.shape[0]):
                returns = returns * self.gamma + rewards64[t, columns]
                seen[t, columns] = returns
                returns = returns * (1.0 - ended[t, columns])
            self.returns[envs] = returns
        self.mean, self.var, self.count = merge_moments(self.mean, self.var, self.count, seen.reshape(-1))
        scaled = rewards64 / torch.sqrt(self.var + 1e-8)
        return torch.clamp(scaled, -self.clip, self.clip).to(rewards.device, rewards.dtype)

    def state_dict(self) -> dict:
        """Everything needed to continue scaling identically."""
        return {
            "returns": self.returns.clone(),
            "mean": self.mean.clone(),
            "var": self.var.clone(),
            "count": self.count,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.returns, self.mean, self.var = state["returns"], state["mean"], state["var"]
        self.count = float(state["count"])
