"""V-trace against a plain loop of IMPALA's sum formula, and against GAE when the policies are the same."""

import math

import torch

from prl.learning.ppo import compute_gae, compute_vtrace


def reference_vtrace(rewards, values, terminated, truncated, final_values, log_rhos, gamma, lam, rho_bar, c_bar):
    """IMPALA's definition written with plain floats, one env at a time:
    v_s = V(x_s) + sum_t gamma^(t-s) (prod_{i=s}^{t-1} c_i) rho_t delta_t, over the steps t of s's episode
    inside the rollout. Returns the targets v_s and IMPALA's policy-gradient advantages
    rho_s (r_s + gamma v_{s+1} - V(x_s))."""
    steps, envs = len(rewards), len(rewards[0])
    targets = [[0.0] * envs for _ in range(steps)]
    impala = [[0.0] * envs for _ in range(steps)]
    for n in range(envs):
        ended = [terminated[t][n] or truncated[t][n] for t in range(steps)]
        next_value = [
            0.0 if terminated[t][n] else final_values[t][n] if truncated[t][n] else values[t + 1][n]
            for t in range(steps)
        ]
        rho = [min(rho_bar, math.exp(log_rhos[t][n])) for t in range(steps)]
        c = [lam * min(c_bar, math.exp(log_rhos[t][n])) for t in range(steps)]
        delta = [rewards[t][n] + gamma * next_value[t] - values[t][n] for t in range(steps)]
        for s in range(steps):
            total, discount, trace = 0.0, 1.0, 1.0
            for t in range(s, steps):
                total += discount * trace * rho[t] * delta[t]
                if ended[t]:
                    break
                discount *= gamma
                trace *= c[t]
            targets[s][n] = values[s][n] + total
        for s in range(steps):
            if ended[s]:
                following = next_value[s]
            else:
                following = targets[s + 1][n] if s + 1 < steps else values[steps][n]
            impala[s][n] = rho[s] * (rewards[s][n] + gamma * following - values[s][n])
    return targets, impala


def rollout(seed, steps=11, envs=5):
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(steps, envs, generator=generator)
    values = torch.randn(steps + 1, envs, generator=generator)
    terminated = torch.rand(steps, envs, generator=generator) < 0.15
    truncated = (torch.rand(steps, envs, generator=generator) < 0.15) & ~terminated
    terminated[3, 0], truncated[3, 0], terminated[7, 0], truncated[7, 0] = True, False, False, True
    final_values = torch.where(truncated, torch.randn(steps, envs, generator=generator), torch.zeros(steps, envs))
    log_rhos = 0.8 * torch.randn(steps, envs, generator=generator)  # ratios both above and below the bars
    return rewards, values, terminated, truncated, final_values, log_rhos


def test_vtrace_matches_the_sum_formula_with_truncated_weights_and_both_episode_ends():
    for seed, (gamma, lam, rho_bar, c_bar) in enumerate([(0.97, 1.0, 1.0, 1.0), (0.9, 0.8, 1.5, 0.7)]):
        data = rollout(seed)
        advantages, targets = compute_vtrace(*data, gamma, lam, rho_bar, c_bar)
        expected_targets, impala = reference_vtrace(*[x.tolist() for x in data], gamma, lam, rho_bar, c_bar)
        assert torch.allclose(targets, torch.tensor(expected_targets), atol=1e-5)
        assert torch.allclose(advantages, targets - data[1][:-1], atol=1e-6)
        if lam == 1.0 and c_bar == rho_bar:  # then the advantages are IMPALA's policy-gradient ones
            assert torch.allclose(advantages, torch.tensor(impala), atol=1e-5)


def test_vtrace_equals_gae_with_lambda_one_when_the_policies_are_the_same():
    rewards, values, terminated, truncated, final_values, _ = rollout(3)
    same = torch.zeros_like(rewards)
    advantages, targets = compute_vtrace(rewards, values, terminated, truncated, final_values, same, 0.99)
    gae_advantages, gae_returns = compute_gae(rewards, values, terminated, truncated, final_values, 0.99, 1.0)
    assert torch.allclose(advantages, gae_advantages, atol=1e-5)
    assert torch.allclose(targets, gae_returns, atol=1e-5)
    # And with lambda below 1, GAE's with that lambda: V-trace on a batch without lag learns what GAE does.
    advantages, targets = compute_vtrace(rewards, values, terminated, truncated, final_values, same, 0.99, lam=0.9)
    gae_advantages, gae_returns = compute_gae(rewards, values, terminated, truncated, final_values, 0.99, 0.9)
    assert torch.allclose(advantages, gae_advantages, atol=1e-5)
    assert torch.allclose(targets, gae_returns, atol=1e-5)


def test_a_far_off_policy_step_is_cut_to_rho_bar_and_stops_the_trace():
    rewards = torch.tensor([[1.0], [1.0]])
    values = torch.tensor([[0.0], [0.0], [0.0]])
    no = torch.zeros(2, 1, dtype=torch.bool)
    log_rhos = torch.tensor([[5.0], [-50.0]])  # step 0: pi far likelier than mu; step 1: nearly impossible under pi
    advantages, targets = compute_vtrace(rewards, values, no, no, torch.zeros(2, 1), log_rhos, 1.0)
    # Step 1's weight is ~0: its target is the value itself; step 0's weight is cut to 1 and its trace to 1.
    assert torch.allclose(targets, torch.tensor([[1.0], [0.0]]), atol=1e-6)
    assert torch.allclose(advantages, torch.tensor([[1.0], [0.0]]), atol=1e-6)
