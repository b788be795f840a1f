"""The original program's front: its example runs with only the imports changed."""

import functools

import gymnasium as gym
import pytest
import torch
import toy_envs
from conftest import assert_same_tensors, run_script

import prl
from prl import PPO, AsyncPPO, ConfigError
from prl.envs.factory import EnvFactory

ORIGINAL_EXAMPLE = """
from prl import PPO
from prl import AsyncPPO
import gymnasium as gym

env = gym.make('CartPole-v1', max_episode_steps=500)
ppo = PPO(is_continuous=False, observ_dim=env.observation_space.shape[0],
          action_dim=env.action_space.n, lr=0.001, policy_clip=0.2, k_epochs=11,
          GAE_lambda=0.95, batch_size=1024, mini_batch_size=512, gamma=0.995)
async_ppo = AsyncPPO(env=env, ppo=ppo, num_envs=32, steps=STEPS)
async_ppo.run()
async_ppo.ppo.save_weights(path='some/folder')
"""


def test_the_original_example_runs_with_only_its_imports_changed(tmp_path, no_leaks):
    # No `if __name__ == "__main__":` guard, as in the original: workers must not re-run the script.
    script = tmp_path / "example.py"
    script.write_text(ORIGINAL_EXAMPLE.replace("STEPS", "8192"))
    result, survivors = run_script([script], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not survivors
    assert "return" in result.stderr, "the progress bar shows the mean return"
    saved = torch.load(tmp_path / "some" / "folder" / "policy.pt", weights_only=True)
    assert "actor.0.weight" in saved["policy"]


def cartpole_ppo(**options):
    return PPO(
        is_continuous=False, observ_dim=4, action_dim=2, batch_size=256, mini_batch_size=128, k_epochs=2, **options
    )


def test_weights_round_trip_and_seed_the_next_run(tmp_path, first_updates, no_leaks):
    env = gym.make("CartPole-v1")
    ppo = cartpole_ppo()
    AsyncPPO(env=env, ppo=ppo, num_envs=4, steps=512).run()
    ppo.save_weights(tmp_path / "weights")
    trained = {name: value.clone() for name, value in ppo.policy.state_dict().items()}

    other = cartpole_ppo()
    other.load_weights(tmp_path / "weights")
    assert_same_tensors(other.pending_weights, trained, "loaded weights")
    # Another seed initializes other weights, so only the loaded ones can make this run start from `trained`.
    AsyncPPO(env="CartPole-v1", ppo=other, num_envs=4, steps=256, seed=2).run()
    fresh = cartpole_ppo()
    AsyncPPO(env="CartPole-v1", ppo=fresh, num_envs=4, steps=256, seed=2).run()
    (_, first_run), (_, loaded_run), (_, fresh_run) = first_updates
    assert_same_tensors(loaded_run["policy"], trained, "the loaded run's first update")
    assert not torch.equal(fresh_run["policy"]["actor.0.weight"], trained["actor.0.weight"])
    assert not torch.equal(first_run["policy"]["actor.0.weight"], trained["actor.0.weight"]), "training moved it"
    # Loading into a trained PPO replaces its policy at once.
    other.load_weights(tmp_path / "weights")
    assert_same_tensors(other.policy.state_dict(), trained, "weights loaded after training")


def test_loading_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="no saved weights at .*policy.pt; pass the folder given to save_weights"
    ):
        cartpole_ppo().load_weights(tmp_path / "nothing")
    with pytest.raises(RuntimeError, match="no weights to save yet"):
        cartpole_ppo().save_weights(tmp_path / "w")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            dict(is_continuous=False, observ_dim=3, action_dim=2),
            "observ_dim is 3, but CartPole-v1's observations have 4 values; pass observ_dim=4",
        ),
        (
            dict(is_continuous=False, observ_dim=4, action_dim=3),
            "action_dim is 3, but CartPole-v1 has 2 actions; pass action_dim=2",
        ),
        (
            dict(is_continuous=True, observ_dim=4, action_dim=2),
            "CartPole-v1 has a discrete action space; pass is_continuous=False",
        ),
    ],
)
def test_dimensions_are_checked_against_the_env(arguments, message):
    with pytest.raises(ConfigError, match=message):
        AsyncPPO(env=gym.make("CartPole-v1"), ppo=PPO(**arguments), num_envs=2, steps=256).run()


def test_a_masked_env_is_refused_by_the_original_front_with_where_to_train_it():
    import prl.envs.tasks  # noqa: F401  (registers prl/IllegalMoves-v0)

    with pytest.raises(ConfigError, match="gives an action mask, and AsyncPPO.*train it with prl.train"):
        ppo = PPO(is_continuous=False, observ_dim=20, action_dim=10)
        AsyncPPO(env=gym.make("prl/IllegalMoves-v0"), ppo=ppo, num_envs=2, steps=256).run()


def test_envs_without_a_spec_travel_by_cloudpickle_and_continuous_actions_scale(no_leaks):
    env = toy_envs.CountingEnv(terminate_at=9, action_kind="box")
    assert env.spec is None
    ppo = PPO(
        is_continuous=True,
        observ_dim=2,
        action_dim=2,
        action_scaling=2.0,
        batch_size=128,
        mini_batch_size=64,
        k_epochs=1,
    )
    runner = AsyncPPO(env=env, ppo=ppo, num_envs=4, steps=256)
    assert runner.config().policy.action_scale == 2.0
    summary = runner.run()
    assert summary["env_steps"] == 256 and summary["env"] == "CountingEnv"


def test_num_envs_spread_evenly_over_workers():
    ppo = cartpole_ppo()
    assert AsyncPPO(env="CartPole-v1", ppo=ppo, num_envs=32, steps=1024, workers=2).config().envs_per_worker == 16
    config = AsyncPPO(env="CartPole-v1", ppo=ppo, num_envs=6, steps=1024, workers=4).config()
    assert (config.workers, config.envs_per_worker) == (3, 2)
    assert functools.reduce(lambda a, b: a * b, (config.workers, config.envs_per_worker)) == 6


def test_async_ppo_trains_an_image_env_as_it_trains_vectors(no_leaks):
    ppo = PPO(
        is_continuous=False, observ_dim=147, action_dim=3, batch_size=128, mini_batch_size=32, k_epochs=4, lr=1e-3
    )
    summary = AsyncPPO(env=toy_envs.CueImageEnv(), ppo=ppo, num_envs=8, steps=8192, workers=2).run()
    assert summary["env_steps"] == 8192 and ppo.policy.encoder is not None
    evaluation = prl.evaluate(ppo.policy, EnvFactory(toy_envs.CueImageEnv), episodes=50, seed=1)
    assert evaluation["return_mean"] >= 0.9  # chance is 1/3
