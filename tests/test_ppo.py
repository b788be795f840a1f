"""The PPO loss against hand computations, and explained variance."""

import math

import torch

from prl.learning.ppo import explained_variance, normalize_advantages, ppo_loss


def test_loss_matches_hand_computation():
    old_logprob = torch.zeros(3)
    new_logprob = torch.log(torch.tensor([1.0, 1.5, 0.5]))  # ratios 1, 1.5 (clipped to 1.2), 0.5 (0.8)
    advantages = torch.tensor([1.0, 2.0, -1.0])
    new_values = torch.tensor([1.0, 2.0, 3.0])
    old_values = torch.tensor([0.0, 0.0, 0.0])
    returns = torch.tensor([0.0, 2.0, 1.0])
    entropy = torch.tensor([0.3, 0.3, 0.6])
    parts = ppo_loss(
        new_logprob, old_logprob, advantages, new_values, old_values, returns, entropy, 0.2, 0.5, 0.01, False
    )

    # max(-A r, -A clip(r)): [-1, max(-3, -2.4) = -2.4, max(0.5, 0.8) = 0.8]
    expected_policy = (-1.0 - 2.4 + 0.8) / 3
    expected_value = 0.5 * (1.0 + 0.0 + 4.0) / 3
    expected_entropy = 0.4
    assert math.isclose(parts.policy_loss.item(), expected_policy, rel_tol=1e-6)
    assert math.isclose(parts.value_loss.item(), expected_value, rel_tol=1e-6)
    assert math.isclose(parts.entropy.item(), expected_entropy, rel_tol=1e-6)
    assert math.isclose(
        parts.loss.item(), expected_policy + 0.5 * expected_value - 0.01 * expected_entropy, rel_tol=1e-6
    )
    assert math.isclose(parts.clipfrac.item(), 2 / 3, rel_tol=1e-6)
    kl = sum((r - 1) - math.log(r) for r in (1.0, 1.5, 0.5)) / 3
    assert math.isclose(parts.approx_kl.item(), kl, rel_tol=1e-5)


def test_ratio_one_gives_plain_policy_gradient_loss():
    logprob = torch.tensor([-0.3, -1.2])
    advantages = torch.tensor([0.5, -2.0])
    zeros = torch.zeros(2)
    parts = ppo_loss(logprob, logprob.clone(), advantages, zeros, zeros, zeros, zeros, 0.2, 0.5, 0.0, False)
    assert parts.policy_loss.item() == -advantages.mean().item()
    assert parts.approx_kl.item() == 0.0 and parts.clipfrac.item() == 0.0


def test_value_clipping_takes_the_larger_error():
    zeros = torch.zeros(1)
    parts = ppo_loss(
        zeros, zeros, zeros, torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0]), zeros, 0.2, 1.0, 0.0, True
    )
    # unclipped error 0; clipped prediction 0.2 -> error 0.8^2
    assert math.isclose(parts.value_loss.item(), 0.5 * 0.64, rel_tol=1e-6)


def test_normalized_advantages_have_zero_mean_unit_std():
    advantages = normalize_advantages(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert abs(advantages.mean().item()) < 1e-6
    assert math.isclose(advantages.std().item(), 1.0, rel_tol=1e-5)


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0])
    assert explained_variance(target, target) == 1.0
    assert math.isclose(explained_variance(torch.full((3,), 2.0), target), 0.0, abs_tol=1e-6)
    assert explained_variance(target, torch.ones(3)) is None
