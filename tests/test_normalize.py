"""Running statistics against direct computations over all data seen."""

import numpy as np
import torch

from prl.nn.normalize import ObsNormalizer, RewardScaler, merge_moments


def test_merge_moments_equals_statistics_of_all_data():
    generator = torch.Generator().manual_seed(0)
    chunks = [torch.randn(n, 3, generator=generator) * 4 + 2 for n in (5, 17, 40)]
    mean, var, count = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64), 1e-12
    for chunk in chunks:
        mean, var, count = merge_moments(mean, var, count, chunk)
    everything = torch.cat(chunks).double()
    assert torch.allclose(mean, everything.mean(0), atol=1e-9)
    assert torch.allclose(var, everything.var(0, unbiased=False), atol=1e-9)


def test_obs_normalizer_is_identity_when_disabled_and_standardizes_when_enabled():
    obs = torch.randn(500, 2) * torch.tensor([10.0, 0.1]) + torch.tensor([3.0, -1.0])
    off = ObsNormalizer(2, clip=10.0, enabled=False)
    off.update(obs)
    assert torch.equal(off(obs), obs)
    on = ObsNormalizer(2, clip=10.0, enabled=True)
    on.update(obs)
    normalized = on(obs)
    assert torch.allclose(normalized.mean(0), torch.zeros(2), atol=1e-3)
    assert torch.allclose(normalized.std(0), torch.ones(2), atol=1e-2)


def test_reward_scaler_divides_by_std_of_discounted_returns():
    rewards = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    ended = torch.tensor([[False, False], [True, False], [False, False]])
    scaler = RewardScaler(num_envs=2, gamma=0.5, clip=100.0)
    scaled = scaler(rewards, ended)
    # Running returns per env: env 0: 1, 1.5 (ends), 1; env 1: 2, 3, 3.5
    seen = np.array([1.0, 2.0, 1.5, 3.0, 1.0, 3.5])
    count = 1e-4 + 6
    var = (1.0 * 1e-4 + seen.var() * 6 + (seen.mean() ** 2) * 1e-4 * 6 / count) / count
    assert torch.allclose(scaled.double(), rewards.double() / np.sqrt(var + 1e-8), atol=1e-6)
    assert torch.allclose(scaler.returns, torch.tensor([1.0, 3.5], dtype=torch.float64))
