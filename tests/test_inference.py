"""The workers' numpy actor agrees with the torch policy the learner trains."""

import functools

import numpy as np
import pytest
import torch
import toy_envs

from prl.config import PolicyConfig
from prl.envs.factory import EnvFactory
from prl.envs.spec import spec_from_spaces
from prl.nn.actors import NumpyActor
from prl.nn.policy import build_policy


def make_policy(action_kind, activation="tanh", normalize=True):
    env = EnvFactory(functools.partial(toy_envs.CountingEnv, action_kind=action_kind))()
    spec = spec_from_spaces("toy", env.observation_space, env.action_space)
    torch.manual_seed(0)
    policy = build_policy(
        spec, PolicyConfig(hidden_sizes=(16, 8), activation=activation, log_std_init=-0.5), normalize, 5.0
    )
    with torch.no_grad():
        for layer in policy.actor:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(30.0)  # sharpen the output so sampling mistakes would show
    policy.obs_normalizer.update(torch.randn(64, 2) * 4 + 2)
    return policy


@pytest.mark.parametrize("action_kind", ["discrete", "multi_discrete", "box"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_log_probs_and_values_match_the_torch_policy(action_kind, activation):
    policy = make_policy(action_kind, activation)
    actor = NumpyActor(policy, np.random.default_rng(1))
    obs = np.random.default_rng(2).normal(2, 4, size=(32, 2)).astype(np.float32)
    actions, logprob, value = actor.act(obs)
    assert actions.dtype == logprob.dtype == value.dtype == np.float32
    assert actions.shape == (32, policy.spec.action_dim)
    _, torch_logprob, _, torch_value = policy.get_action_and_value(torch.from_numpy(obs), torch.from_numpy(actions))
    # torch recomputes (action - mean) / std, which loses float32 digits when the mean is large
    np.testing.assert_allclose(logprob, torch_logprob.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(value, torch_value.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(actor.value(obs), value, atol=1e-6)


def test_discrete_samples_follow_the_policy_probabilities():
    policy = make_policy("discrete")
    actor = NumpyActor(policy, np.random.default_rng(3))
    obs = np.tile(np.array([[1.0, 3.0]], dtype=np.float32), (20_000, 1))
    actions, _, _ = actor.act(obs)
    frequencies = np.bincount(actions[:, 0].astype(int), minlength=3) / len(actions)
    probabilities = (
        torch.softmax(policy.actor(policy.obs_normalizer(torch.from_numpy(obs[:1]))), -1)[0].detach().numpy()
    )
    np.testing.assert_allclose(frequencies, probabilities, atol=0.015)


def test_gaussian_samples_have_the_policy_mean_and_std():
    policy = make_policy("box")
    actor = NumpyActor(policy, np.random.default_rng(4))
    obs = np.tile(np.array([[1.0, 3.0]], dtype=np.float32), (20_000, 1))
    actions, _, _ = actor.act(obs)
    mean = policy.actor(policy.obs_normalizer(torch.from_numpy(obs[:1])))[0].detach().numpy()
    np.testing.assert_allclose(actions.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(actions.std(0), np.exp(-0.5), rtol=0.03)


def test_load_follows_new_weights():
    policy = make_policy("discrete", normalize=False)
    actor = NumpyActor(policy, np.random.default_rng(5))
    obs = np.ones((4, 2), dtype=np.float32)
    before = actor.value(obs)
    with torch.no_grad():
        policy.critic[-1].bias.add_(1.0)
    np.testing.assert_allclose(actor.value(obs), before)
    actor.load(policy)
    np.testing.assert_allclose(actor.value(obs), before + 1.0, atol=1e-6)
