"""Env specs: supported and refused spaces, and the mapping from policy actions to env actions."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from prl import ConfigError
from prl.envs.factory import EnvFactory, make_env
from prl.envs.spec import spec_from_spaces

BOX_OBS = gym.spaces.Box(-1, 1, shape=(3,))


def test_bounded_box_maps_unit_interval_onto_the_bounds():
    spec = spec_from_spaces(
        "env", BOX_OBS, gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32))
    )
    actions = spec.to_env_actions(np.array([[-1.0, 1.0], [0.5, 0.0], [3.0, -7.0]], dtype=np.float32))
    np.testing.assert_allclose(np.stack(actions), [[-2.0, 10.0], [1.0, 5.0], [2.0, 0.0]])


def test_half_bounded_and_unbounded_dimensions_pass_through_but_stay_in_the_space():
    space = gym.spaces.Box(np.array([0.0, -np.inf], np.float32), np.array([np.inf, np.inf], np.float32))
    spec = spec_from_spaces("env", BOX_OBS, space)
    actions = spec.to_env_actions(np.array([[-5.0, -5.0], [3.0, 4.0]], dtype=np.float32))
    np.testing.assert_allclose(np.stack(actions), [[0.0, -5.0], [3.0, 4.0]])
    assert all(space.contains(a) for a in actions)


def test_action_scale_multiplies_then_clips():
    spec = spec_from_spaces("env", BOX_OBS, gym.spaces.Box(-2.0, 2.0, shape=(1,)), action_scale=2.0)
    actions = spec.to_env_actions(np.array([[0.5], [-3.0]], dtype=np.float32))
    np.testing.assert_allclose(np.stack(actions), [[1.0], [-2.0]])


def test_discrete_and_multi_discrete_keep_their_start_and_shape():
    discrete = spec_from_spaces("env", BOX_OBS, gym.spaces.Discrete(3, start=-1))
    assert discrete.to_env_actions(np.array([[0.0], [2.0]])) == [-1, 1]
    space = gym.spaces.MultiDiscrete(np.array([[2, 3], [4, 5]]))
    multi = spec_from_spaces("env", BOX_OBS, space)
    assert multi.action_dim == 4 and multi.action_dims == (2, 3, 4, 5)
    actions = multi.to_env_actions(np.array([[1.0, 2.0, 3.0, 4.0]]))
    assert actions[0].shape == (2, 2) and space.contains(actions[0])


@pytest.mark.parametrize(
    "obs_space, action_space, message",
    [
        (gym.spaces.Text(8), gym.spaces.Discrete(2), r"env's observation space is a Text, which prl cannot store"),
        (
            gym.spaces.Dict({"a": BOX_OBS, "b": gym.spaces.Dict({"note": gym.spaces.Text(8)})}),
            gym.spaces.Discrete(2),
            r"env's observation key 'b.note' is a Text, which prl cannot store; wrap the env",
        ),
        (gym.spaces.Sequence(BOX_OBS), gym.spaces.Discrete(2), "observation space is a Sequence"),
        (BOX_OBS, gym.spaces.Tuple([gym.spaces.Discrete(2)]), "has a Tuple action space"),
        (BOX_OBS, gym.spaces.MultiBinary(3), r"has a MultiBinary \(3,\) action space"),
    ],
)
def test_unsupported_spaces_are_named(obs_space, action_space, message):
    with pytest.raises(ConfigError, match=message):
        spec_from_spaces("env", obs_space, action_space)


@pytest.mark.parametrize(
    "env_id, message",
    [
        ("CartPol-v1", "did you mean CartPole-v1"),
        ("foo bar", "gymnasium cannot make 'foo bar'"),
        ("Taxi-v1", "gymnasium cannot make 'Taxi-v1'"),
    ],
)
def test_bad_env_ids_are_config_errors(env_id, message):
    with pytest.raises(ConfigError, match=message):
        make_env(EnvFactory(env_id))


def test_env_callable_must_return_an_env():
    with pytest.raises(ConfigError, match="returned int, not a gymnasium.Env"):
        make_env(EnvFactory(lambda: 3))


def test_a_missing_dependency_names_the_extra_to_install():
    from prl.envs.factory import _missing_dependency_message

    mujoco = _missing_dependency_message(
        "HalfCheetah-v5", 'MuJoCo is not installed, run `pip install "gymnasium[mujoco]"`'
    )
    assert mujoco.endswith('install prl\'s mujoco extra: pip install -e ".[mujoco]".')
    box2d = _missing_dependency_message(
        "LunarLander-v3",
        'Box2D is not installed, you can install it by run `pip install swig` followed by `pip install "gymnasium[box2d]"`',
    )
    assert box2d.endswith('install prl\'s box2d extra: pip install -e ".[box2d]".')


def test_the_extras_make_mujoco_and_box2d_envs_without_a_warning():
    # In a fresh process: MuJoCo prints its warnings from C, once per model compiled.
    code = (
        "from prl.envs.factory import EnvFactory, make_env\n"
        "for env_id in ('HalfCheetah-v5', 'Hopper-v5', 'Walker2d-v5', 'Ant-v5', 'LunarLander-v3', 'MiniGrid-Empty-5x5-v0'):\n"
        "    env = make_env(EnvFactory(env_id))\n"
        "    env.reset(seed=0); env.step(env.action_space.sample()); env.close()\n"
        "print('made')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "made" and result.stderr == "", result.stderr[-2000:]


def test_an_env_whose_observation_contradicts_its_space_is_refused_at_start():
    import toy_envs

    from prl import Config
    from prl.envs.factory import probe_env

    with pytest.raises(
        ConfigError, match=r"returned an observation of shape \(3,\), but its observation space declares \(2,\)"
    ):
        probe_env(Config(env=toy_envs.WrongShapeEnv))
