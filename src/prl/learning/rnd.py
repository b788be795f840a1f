"""Random Network Distillation (Burda et al., 2018): intrinsic rewards for exploration.

A fixed, randomly initialized target network maps observations to features; a predictor
network learns to reproduce them. Its error is large on observations unlike those seen so far,
and that error is the intrinsic reward. As in the paper: both networks see observations
normalized by their own running statistics and clipped to [-5, 5]; the reward is divided by
a running std of discounted intrinsic returns; a separate value head learns the intrinsic
returns, which are non-episodic (an episode's end does not stop them); the predictor trains on
a fraction of each minibatch.

The module lives with the learner only: workers act with the policy alone, so RND changes
nothing in collection or in the weights they receive.
"""

from __future__ import annotations

import torch
from torch import nn

from prl.nn.normalize import ObsNormalizer
from prl.nn.policy import mlp

RND_OBS_CLIP = 5.0
FEATURES = 64


class RND(nn.Module):
    """Target and predictor networks, their observation normalizer, and the intrinsic value head."""

    def __init__(self, obs_dim: int, hidden_sizes: tuple, activation: str):
        super().__init__()
        self.obs_normalizer = ObsNormalizer(obs_dim, RND_OBS_CLIP, enabled=True)
        self.target = mlp(obs_dim, (64, 64), FEATURES, "relu", out_std=1.0)
        self.predictor = mlp(obs_dim, (64, 64, 64), FEATURES, "relu", out_std=1.0)
        self.value_head = mlp(obs_dim, hidden_sizes, 1, activation, out_std=1.0)
        for parameter in self.target.parameters():
            parameter.requires_grad_(False)

    def prediction_error(self, next_obs: torch.Tensor) -> torch.Tensor:
        """Mean squared error between predictor and target features, per observation [B]."""
        x = self.obs_normalizer(next_obs)
        with torch.no_grad():
            target = self.target(x)
        return (self.predictor(x) - target).pow(2).mean(-1)

    def intrinsic_value(self, policy_input: torch.Tensor) -> torch.Tensor:
        """The intrinsic value head's estimate [B]; it sees what the policy's networks see (normalized or raw)."""
        return self.value_head(policy_input).squeeze(-1)

    def predictor_loss(self, next_obs: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
        """Prediction error averaged over a random `fraction` of the minibatch (at least one sample)."""
        keep = torch.rand(next_obs.shape[0], generator=generator) < fraction
        keep = keep.to(next_obs.device)
        if not keep.any():
            keep[0] = True
        return self.prediction_error(next_obs[keep]).mean()
