"""The observation layout: leaves read from the space, stored in their dtypes, refused clearly."""

import gymnasium as gym
import numpy as np
import pytest
import torch
import toy_envs

from prl import ConfigError
from prl.collection.buffers import TrajectoryBuffer
from prl.envs.observations import DISCRETE, IMAGE, VECTOR, ObsLayout
from prl.envs.spec import spec_from_spaces

ATARI = gym.spaces.Box(0, 255, shape=(4, 84, 84), dtype=np.uint8)
MIXED = gym.spaces.Dict(
    {
        "pixels": gym.spaces.Box(0, 255, shape=(7, 7, 3), dtype=np.uint8),
        "state": gym.spaces.Dict(
            {"position": gym.spaces.Box(-1.0, 1.0, shape=(2, 2)), "mode": gym.spaces.Discrete(4, start=1)}
        ),
        "flags": gym.spaces.Tuple([gym.spaces.MultiBinary(3), gym.spaces.MultiDiscrete([2, 5])]),
    }
)


def test_a_flat_box_keeps_the_original_float_vector_layout():
    layout = ObsLayout.from_space(gym.spaces.Box(-1.0, 1.0, shape=(3, 2)))
    assert layout.flat and layout.leaves[0].shape == (6,) and layout.leaves[0].dtype == np.float32
    buffer = TrajectoryBuffer(2, 4, 3, layout, 1)
    assert isinstance(buffer.obs, torch.Tensor) and buffer.obs.shape == (2, 5, 3, 6)


def test_images_stay_uint8_and_their_channel_order_is_read_from_the_shape():
    (atari,) = ObsLayout.from_space(ATARI).leaves
    assert (atari.kind, atari.dtype, atari.shape, atari.image_chw) == (IMAGE, np.uint8, (4, 84, 84), (4, 84, 84))
    assert atari.scale == pytest.approx(1 / 255)
    (grid,) = ObsLayout.from_space(gym.spaces.Box(0, 10, shape=(7, 7, 3), dtype=np.uint8)).leaves
    assert not grid.channels_first and grid.image_chw == (3, 7, 7) and grid.scale == pytest.approx(1 / 10)
    (grey,) = ObsLayout.from_space(gym.spaces.Box(0, 255, shape=(84, 84), dtype=np.uint8)).leaves
    assert grey.image_chw == (1, 84, 84)
    buffer = TrajectoryBuffer(2, 128, 8, ObsLayout.from_space(ATARI), 1)
    frames = buffer.obs[""]
    assert frames.dtype == torch.uint8 and frames.element_size() * frames[0, 0, 0].numel() == 4 * 84 * 84


def test_dict_and_tuple_spaces_give_one_leaf_per_entry_with_their_paths():
    layout = ObsLayout.from_space(MIXED)
    assert not layout.flat and layout.has_images
    assert [(leaf.key, leaf.kind) for leaf in layout.leaves] == [  # in the space's order (gymnasium sorts keys)
        ("flags.0", VECTOR),
        ("flags.1", DISCRETE),
        ("pixels", IMAGE),
        ("state.mode", DISCRETE),
        ("state.position", VECTOR),
    ]
    sample = MIXED.sample()
    arrays = dict(zip([leaf.key for leaf in layout.leaves], layout.split(sample)))
    assert arrays["state.mode"] == sample["state"]["mode"] - 1  # stored counted from 0
    np.testing.assert_array_equal(arrays["flags.1"], sample["flags"][1])
    assert arrays["state.position"].shape == (4,) and arrays["pixels"].dtype == np.uint8
    stacked = layout.stack([MIXED.sample() for _ in range(5)])
    assert {key: value.shape for key, value in stacked.items()} == {
        "pixels": (5, 7, 7, 3),
        "state.position": (5, 4),
        "state.mode": (5,),
        "flags.0": (5, 3),
        "flags.1": (5, 2),
    }
    buffer = TrajectoryBuffer(3, 4, 2, layout, 1)
    assert buffer.obs["state.mode"].dtype == torch.int64 and int(buffer.obs["state.mode"].min()) == -1
    assert torch.isnan(buffer.obs["flags.0"]).all() and buffer.obs["pixels"].shape == (3, 5, 2, 7, 7, 3)


def test_the_spec_normalizes_only_the_vector_leaves_bounds():
    spec = spec_from_spaces("mixed", MIXED, gym.spaces.Discrete(2))
    assert not spec.flat_obs and spec.obs_low.shape == (7,)  # position (4) and flags (3)


def test_an_observation_that_contradicts_its_dict_space_is_refused_at_start():
    from prl import Config
    from prl.envs.factory import probe_env

    class Wrong(toy_envs.ImageAndVectorEnv):
        def _obs(self):
            obs = super()._obs()
            obs["vector"] = np.zeros(3, dtype=np.float32)
            return obs

    with pytest.raises(
        ConfigError, match=r"at key 'vector' of shape \(3,\), but its observation space declares \(1,\)"
    ):
        probe_env(Config(env=Wrong))


def test_channel_order_dotted_keys_and_deep_images():
    (stack8,) = ObsLayout.from_space(gym.spaces.Box(0, 255, shape=(8, 84, 84), dtype=np.uint8)).leaves
    assert stack8.channels_first and stack8.image_chw == (8, 84, 84)
    dotted = gym.spaces.Dict({"a.b": gym.spaces.Box(-1, 1, shape=(2,)), "c": gym.spaces.Discrete(3)})
    layout = ObsLayout.from_space(dotted)
    assert [leaf.key for leaf in layout.leaves] == ["a.b", "c"]
    assert layout.split({"a.b": np.ones(2), "c": 2})[0].tolist() == [1.0, 1.0]
    clash = gym.spaces.Dict({"a": gym.spaces.Dict({"b": gym.spaces.Discrete(2)}), "a.b": gym.spaces.Discrete(5)})
    with pytest.raises(ConfigError, match="two entries named 'a.b'"):
        ObsLayout.from_space(clash, "env")
    with pytest.raises(ConfigError, match=r"uint8 Box \(4, 84, 84, 3\), an image of more than 3 dimensions"):
        ObsLayout.from_space(gym.spaces.Box(0, 255, shape=(4, 84, 84, 3), dtype=np.uint8), "env")
