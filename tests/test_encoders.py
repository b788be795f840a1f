"""Encoders chosen from the layout, and a policy over images and Dicts that acts as it learns."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from prl import ConfigError
from prl.config import PolicyConfig
from prl.envs.observations import ObsLayout, map_obs
from prl.envs.spec import spec_from_spaces
from prl.nn.actors import NumpyActor, TorchActor, make_actor
from prl.nn.encoders import ObsEncoder
from prl.nn.policy import build_policy

ATARI = gym.spaces.Box(0, 255, shape=(4, 84, 84), dtype=np.uint8)
MIXED = gym.spaces.Dict(
    {
        "pixels": gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8),
        "position": gym.spaces.Box(-1.0, 1.0, shape=(2,)),
        "mode": gym.spaces.MultiDiscrete([2, 3]),
    }
)


def batch_of(space: gym.Space, n: int, seed: int = 0):
    space.seed(seed)
    layout = ObsLayout.from_space(space)
    return map_obs(torch.from_numpy, layout.stack([space.sample() for _ in range(n)]))


def no_normalizer(x):
    return x


@pytest.mark.parametrize(
    "space, choice, width",
    [
        (ATARI, "auto", 512),  # the Nature CNN
        (gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8), "auto", 256),  # the small grid CNN
        (gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8), "mlp", 147),  # flattened pixels
        (gym.spaces.Box(0, 255, shape=(40, 40), dtype=np.uint8), "grid", 256),
        (MIXED, "auto", 256 + 2 + 5),  # grid CNN, the vector, one-hot 2 + 3
    ],
)
def test_the_encoder_follows_the_layout_and_the_option(space, choice, width):
    encoder = ObsEncoder(ObsLayout.from_space(space), choice)
    assert encoder.out_size == width
    features = encoder(batch_of(space, 3), no_normalizer)
    assert features.shape == (3, width) and torch.isfinite(features).all()


def test_hwc_and_chw_images_give_the_same_features():
    hwc = gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8)
    chw = gym.spaces.Box(0, 255, shape=(3, 7, 7), dtype=np.uint8)
    torch.manual_seed(0)
    first = ObsEncoder(ObsLayout.from_space(hwc), "auto")
    torch.manual_seed(0)
    second = ObsEncoder(ObsLayout.from_space(chw), "auto")
    images = batch_of(hwc, 4)  # a top-level image is the leaf with key ""
    channels_first = {"": images[""].permute(0, 3, 1, 2)}
    torch.testing.assert_close(first(images, no_normalizer), second(channels_first, no_normalizer))


def test_discrete_leaves_are_one_hot():
    layout = ObsLayout.from_space(gym.spaces.Dict({"mode": gym.spaces.MultiDiscrete([2, 3])}))
    features = ObsEncoder(layout, "auto")({"mode": torch.tensor([[1, 2], [0, 0]])}, no_normalizer)
    assert features.tolist() == [[0, 1, 0, 0, 1], [1, 0, 1, 0, 0]]


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, shape=(2,))])
def test_workers_act_with_the_torch_policy_and_the_learner_scores_the_same(action_space):
    spec = spec_from_spaces("mixed", MIXED, action_space)
    torch.manual_seed(1)
    policy = build_policy(spec, PolicyConfig(), normalize_obs=True, obs_clip=10.0)
    layout = spec.obs_layout
    raw = layout.stack([MIXED.sample() for _ in range(6)])
    policy.update_normalizer(map_obs(torch.from_numpy, raw))
    actor = make_actor(policy, np.random.default_rng(0))
    assert isinstance(actor, TorchActor)
    actions, logprobs, values = actor.act(raw)
    again = TorchActor(policy, np.random.default_rng(0)).act(raw)
    np.testing.assert_array_equal(actions, again[0])  # seeded: a worker repeats itself
    # The learner's view of the same samples: first ratio exactly 1, same values.
    new_logprob, _, new_values = policy.score(policy.prepare(map_obs(torch.from_numpy, raw)), torch.from_numpy(actions))
    torch.testing.assert_close(new_logprob, torch.from_numpy(logprobs))
    torch.testing.assert_close(new_values, torch.from_numpy(values))
    np.testing.assert_allclose(actor.value(raw), values, rtol=1e-6)


def test_flat_observations_keep_the_numpy_actor():
    spec = spec_from_spaces("flat", gym.spaces.Box(-1, 1, shape=(4,)), gym.spaces.Discrete(2))
    policy = build_policy(spec, PolicyConfig(), normalize_obs=False, obs_clip=10.0)
    assert policy.encoder is None and isinstance(make_actor(policy, np.random.default_rng(0)), NumpyActor)


def test_the_nature_cnn_refuses_images_it_cannot_fit():
    with pytest.raises(ConfigError, match=r"needs images of at least 36x36 pixels, and the observation image is 7x7"):
        ObsEncoder(ObsLayout.from_space(gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8)), "nature")


def test_the_grid_cnn_pools_larger_maps_to_keep_its_last_layer_small():
    encoder = ObsEncoder(ObsLayout.from_space(gym.spaces.Box(0, 255, shape=(3, 35, 35), dtype=np.uint8)), "grid")
    assert sum(p.numel() for p in encoder.parameters()) < 1_000_000


def test_a_custom_encoder_is_named_by_module_and_function():
    space = gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8)
    encoder = ObsEncoder(ObsLayout.from_space(space), "toy_envs:tiny_encoder")
    assert encoder.out_size == 5 and encoder(batch_of(space, 2), no_normalizer).shape == (2, 5)
    with pytest.raises(ConfigError, match=r"encoder 'toy_envs:missing' cannot be loaded"):
        ObsEncoder(ObsLayout.from_space(space), "toy_envs:missing")
