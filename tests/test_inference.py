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


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_recurrent_numpy_actor_steps_its_state_as_the_torch_policy_does(kind):
    env = EnvFactory(functools.partial(toy_envs.CountingEnv, action_kind="discrete"))()
    spec = spec_from_spaces("toy", env.observation_space, env.action_space)
    torch.manual_seed(0)
    policy = build_policy(spec, PolicyConfig(hidden_sizes=(16,), recurrent=kind, recurrent_size=8), True, 5.0)
    policy.obs_normalizer.update(torch.randn(64, 2) * 4 + 2)
    actor = NumpyActor(policy, np.random.default_rng(6))
    generator = np.random.default_rng(7)
    state = policy.core.initial_state(5)
    assert np.array_equal(actor.initial_states(5), state.numpy())
    for t in range(6):
        obs = generator.normal(2, 4, size=(5, 2)).astype(np.float32)
        starts = np.array([t == 0, t == 3, False, t % 2 == 1, False])
        value_only = actor.value(obs, starts)
        actions, logprob, value = actor.act(obs, starts)
        with torch.no_grad():
            inputs = policy.prepare(torch.from_numpy(obs))
            torch_logprob, _, torch_value = policy.score(
                inputs, torch.from_numpy(actions), state, torch.from_numpy(starts)[None]
            )
            _, _, _, state = policy.step(torch.from_numpy(obs), state, torch.from_numpy(starts))
        np.testing.assert_allclose(logprob, torch_logprob.numpy(), atol=1e-5)
        np.testing.assert_allclose(value, torch_value.numpy(), atol=1e-5)
        np.testing.assert_allclose(value_only, value, atol=1e-6)
        np.testing.assert_allclose(actor.state, state.numpy(), atol=1e-5)
    final = actor.value(obs[[1, 3]], envs=[1, 3])
    with torch.no_grad():
        expected = policy.value_after(torch.from_numpy(obs[[1, 3]]), state[[1, 3]], torch.zeros(2, dtype=torch.bool))
    np.testing.assert_allclose(final, expected.numpy(), atol=1e-5)
