"""GAE against a plain Python reference loop, with terminations and truncations inside a rollout."""

import torch

from prl.learning.ppo import compute_gae


def reference_gae(rewards, values, terminated, truncated, final_values, gamma, lam):
    """Textbook GAE written with plain floats, one env at a time."""
    steps, envs = len(rewards), len(rewards[0])
    advantages = [[0.0] * envs for _ in range(steps)]
    for n in range(envs):
        running = 0.0
        for t in reversed(range(steps)):
            if terminated[t][n]:
                next_value, running = 0.0, 0.0
            elif truncated[t][n]:
                next_value, running = final_values[t][n], 0.0
            else:
                next_value = values[t + 1][n]
            delta = rewards[t][n] + gamma * next_value - values[t][n]
            running = delta + gamma * lam * running
            advantages[t][n] = running
    return advantages


def test_gae_matches_reference_loop_with_both_episode_ends():
    generator = torch.Generator().manual_seed(0)
    steps, envs = 9, 6
    rewards = torch.randn(steps, envs, generator=generator)
    values = torch.randn(steps + 1, envs, generator=generator)
    final_values = torch.randn(steps, envs, generator=generator)
    terminated = torch.rand(steps, envs, generator=generator) < 0.2
    truncated = (torch.rand(steps, envs, generator=generator) < 0.2) & ~terminated
    # Make sure both kinds of ending occur in the same column, mid-rollout.
    terminated[2, 0], truncated[2, 0], terminated[5, 0], truncated[5, 0] = True, False, False, True
    final_values = torch.where(truncated, final_values, torch.zeros_like(final_values))

    advantages, returns = compute_gae(rewards, values, terminated, truncated, final_values, 0.97, 0.9)
    expected = reference_gae(
        rewards.tolist(), values.tolist(), terminated.tolist(), truncated.tolist(), final_values.tolist(), 0.97, 0.9
    )
    assert torch.allclose(advantages, torch.tensor(expected), atol=1e-5)
    assert torch.allclose(returns, advantages + values[:-1])


def test_termination_does_not_bootstrap_and_truncation_does():
    rewards = torch.tensor([[1.0, 1.0]])
    values = torch.tensor([[0.5, 0.5], [9.0, 9.0]])  # row 1 belongs to the next episode
    terminated = torch.tensor([[True, False]])
    truncated = torch.tensor([[False, True]])
    final_values = torch.tensor([[0.0, 2.0]])
    advantages, _ = compute_gae(rewards, values, terminated, truncated, final_values, 0.9, 0.95)
    assert torch.allclose(advantages, torch.tensor([[1.0 - 0.5, 1.0 + 0.9 * 2.0 - 0.5]]))


def test_unfinished_episode_bootstraps_from_last_value():
    rewards = torch.tensor([[1.0], [1.0]])
    values = torch.tensor([[0.0], [0.0], [10.0]])
    no = torch.zeros(2, 1, dtype=torch.bool)
    advantages, _ = compute_gae(rewards, values, no, no, torch.zeros(2, 1), 0.5, 1.0)
    # t=1: 1 + 0.5 * 10 = 6; t=0: 1 + 0.5 * 0 - 0 + 0.5 * 6 = 4
    assert torch.allclose(advantages, torch.tensor([[4.0], [6.0]]))
