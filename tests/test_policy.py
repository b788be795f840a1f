"""The policy's log-probabilities and entropies against torch.distributions, for every action space."""

import functools

import pytest
import torch
import toy_envs
from torch.distributions import Categorical, Normal

from prl.config import PolicyConfig
from prl.envs.factory import EnvFactory
from prl.envs.spec import spec_from_spaces
from prl.nn.policy import build_policy, place_policy


def make_policy(action_kind):
    env = EnvFactory(functools.partial(toy_envs.CountingEnv, action_kind=action_kind))()
    spec = spec_from_spaces("toy", env.observation_space, env.action_space)
    torch.manual_seed(0)
    policy = build_policy(spec, PolicyConfig(hidden_sizes=(8,), log_std_init=-0.3), False, 10.0)
    with torch.no_grad():
        policy.actor[-1].weight.mul_(100.0)
    return policy


@pytest.mark.parametrize("action_kind", ["discrete", "multi_discrete", "box"])
def test_scores_match_torch_distributions(action_kind):
    policy = make_policy(action_kind)
    obs = torch.randn(64, 2) * 3
    action, logprob, entropy, value = policy.get_action_and_value(obs)
    out = policy.actor(obs)
    if action_kind == "box":
        dist = Normal(out, policy.log_std.exp().expand_as(out))
        expected_logprob, expected_entropy = dist.log_prob(action).sum(-1), dist.entropy().sum(-1)
    else:
        sizes = list(policy.spec.action_dims)
        dists = [Categorical(logits=logits) for logits in torch.split(out, sizes, dim=-1)]
        expected_logprob = sum(d.log_prob(action[:, i].long()) for i, d in enumerate(dists))
        expected_entropy = sum(d.entropy() for d in dists)
        for i, size in enumerate(sizes):
            assert ((action[:, i] >= 0) & (action[:, i] < size)).all()
    assert torch.allclose(logprob, expected_logprob, atol=1e-5)
    assert torch.allclose(entropy, expected_entropy, atol=1e-5)
    assert torch.allclose(value, policy.get_value(obs))
    _, rescored, _, _ = policy.get_action_and_value(obs, action)
    assert torch.equal(rescored, logprob)


def test_deterministic_actions_are_the_mode():
    policy = make_policy("discrete")
    obs = torch.randn(32, 2)
    assert torch.equal(policy.act(obs).squeeze(-1).long(), policy.actor(obs).argmax(-1))
    gaussian = make_policy("box")
    assert torch.equal(gaussian.act(obs), gaussian.actor(obs))


def test_a_placed_cnn_scores_on_its_device_as_in_float32_on_the_cpu(device, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # CUDA's default
    env = toy_envs.CueImageEnv(size=40)  # the Nature CNN's size
    spec = spec_from_spaces("image", env.observation_space, env.action_space)
    torch.manual_seed(0)
    policy = build_policy(spec, PolicyConfig(), False, 10.0)
    obs = {"": torch.randint(0, 256, (16, *env.observation_space.shape), dtype=torch.uint8)}
    actions = torch.randint(0, env.action_space.n, (16, 1))
    _, expected, _, expected_value = policy.get_action_and_value(obs, actions)
    placed = place_policy(policy, torch.device(device))
    assert next(placed.parameters()).device.type == device
    _, logprob, _, value = placed.get_action_and_value({"": obs[""].to(device)}, actions.to(device))
    assert torch.allclose(logprob.cpu(), expected, atol=1e-5)
    assert torch.allclose(value.cpu(), expected_value, atol=1e-5), "the critic's unit-scale output too"
    assert torch.backends.cudnn.allow_tf32 is (device == "cpu"), "TF32 convolutions are off once a CNN is on CUDA"


def test_placing_a_cnn_on_cuda_turns_tf32_convolutions_off(monkeypatch):
    # Runs without a GPU: the move itself is stubbed, so what is checked is place_policy's decision.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # CUDA's default
    env = toy_envs.CueImageEnv(size=40)
    policy = build_policy(
        spec_from_spaces("image", env.observation_space, env.action_space), PolicyConfig(), False, 10.0
    )
    moves = []
    monkeypatch.setattr(policy, "to", lambda device: moves.append(device) or policy)
    assert place_policy(policy, torch.device("cpu")) is policy
    assert torch.backends.cudnn.allow_tf32 is True, "the CPU has no TF32: nothing to switch off"
    assert place_policy(policy, torch.device("cuda")) is policy
    assert torch.backends.cudnn.allow_tf32 is False, "TF32 convolutions are off once a CNN is on CUDA"
    assert moves == [torch.device("cpu"), torch.device("cuda")]
