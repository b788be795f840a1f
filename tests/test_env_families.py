"""Env families known by id prefix: their packages, preprocessing, and whole-game scores for Atari."""

import numpy as np
import pytest
import torch

from prl import ActorPool, Config, ConfigError, Learner, tuned_config
from prl.envs.factory import EnvFactory, make_env, probe_env
from prl.envs.families import GAME_OVER, GAME_SCORE
from prl.run.evaluation import evaluate


def test_minigrid_ids_train_from_their_view_scaled_by_its_largest_index():
    spec = probe_env(Config(env="MiniGrid-DoorKey-5x5-v0"))
    (view,) = spec.obs_layout.leaves
    assert (view.kind, view.shape, view.scale) == ("image", (7, 7, 3), pytest.approx(1 / 10))
    assert spec.action_dims == (7,)


def test_a_family_whose_package_is_missing_names_its_extra(monkeypatch):
    from prl.envs import families as env_families

    fake = env_families.Family(("Fake-",), "prl_no_such_package", "fake", lambda env: env)
    monkeypatch.setattr(env_families, "FAMILIES", (fake,))
    with pytest.raises(
        ConfigError, match=r'Fake-v0 needs the prl_no_such_package package.*pip install -e "\.\[fake\]"\.$'
    ):
        env_families.make("Fake-v0", {})


def test_atari_ids_get_the_standard_preprocessing():
    spec = probe_env(Config(env="ALE/Breakout-v5"))
    (frames,) = spec.obs_layout.leaves
    assert (frames.kind, frames.shape, frames.channels_first) == ("image", (4, 84, 84), True)
    assert spec.game_scores and spec.action_dims == (4,)
    # Q*bert scores 25 points a cube, so a clipped reward cannot pass for the game's own.
    env = make_env(EnvFactory("ALE/Qbert-v5"))
    try:
        _, info = env.reset(seed=0)
        score, steps = info.get(GAME_SCORE, 0.0), []
        for _ in range(60):
            _, reward, terminated, truncated, info = env.step(5)  # hop down-left: a new cube each hop
            steps.append((reward, info[GAME_SCORE] - score))
            score = info[GAME_SCORE]
            if terminated or truncated:
                break
        assert sum(points > 0 for _, points in steps) >= 2, "hops down the pyramid score"
        assert all(reward == np.sign(points) for reward, points in steps), "rewards clipped to their sign for learning"
    finally:
        env.close()


def test_atari_with_one_frame_feeds_a_recurrent_policy_and_a_bad_frame_count_is_refused(no_leaks):
    config = tuned_config(
        "ALE/Breakout-v5",
        env_kwargs={"frame_stack": 1},
        recurrent="lstm",
        recurrent_size=128,
        workers=1,
        envs_per_worker=2,
        rollout_steps=16,
        minibatch_size=16,
        progress=False,
    )
    (frame,) = probe_env(config).obs_layout.leaves
    assert (frame.kind, frame.shape) == ("image", (1, 84, 84))
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
    assert batch.rewards.shape == (16, 2)
    assert np.isfinite(learner.update(batch)["policy_loss"])
    for bad in (0, 2.0, "4"):
        with pytest.raises(ConfigError, match=rf"frame_stack={bad!r} is not valid for ALE/Breakout-v5: give a whole"):
            make_env(EnvFactory("ALE/Breakout-v5", {"frame_stack": bad}))


def test_an_atari_episode_spans_several_lives_and_reports_the_whole_games_score(no_leaks):
    # Q*bert has 4 lives: each lost life ends an episode to learn from, and only the game's
    # end reports a return, the unclipped score of all 4 lives. Every point it scores is worth
    # 25 or more (a cube is 25), where the clipped reward is 1: a return that were the clipped
    # rewards' sum would fall short by 25 times.
    config = tuned_config("ALE/Qbert-v5", workers=1, envs_per_worker=1, rollout_steps=400, progress=False, seed=3)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
    ends = torch.nonzero(batch.terminated[:, 0] | batch.truncated[:, 0]).flatten().tolist()
    games = torch.nonzero(~torch.isnan(batch.episode_returns[:, 0])).flatten().tolist()
    assert games, "a random game of Q*bert ends within 400 steps"
    lives_in_first_game = [end for end in ends if end <= games[0]]
    assert len(lives_in_first_game) == 4 and lives_in_first_game[-1] == games[0]
    clipped_points = float(batch.rewards[: games[0] + 1, 0].sum())
    assert clipped_points > 0, "a random game of Q*bert scores"
    assert float(batch.episode_returns[games[0], 0]) >= 25 * clipped_points
    assert int(batch.episode_lengths[games[0], 0]) > games[0] // 4


def test_evaluation_plays_whole_games_and_ends_the_ones_that_stall(monkeypatch):
    import prl.run.evaluation

    config = tuned_config("ALE/Breakout-v5")
    learner = Learner(config)
    result = evaluate(learner.policy, EnvFactory("ALE/Breakout-v5"), episodes=2, seed=1)
    assert result["stalled"] == 0 and min(result["lengths"]) > 5 * 5  # five lives, each a few steps at least
    monkeypatch.setattr(prl.run.evaluation, "STALL_STEPS", 3)
    with pytest.warns(UserWarning, match=r"2 of 2 evaluation games of ALE/Breakout-v5 scored nothing for 3 steps"):
        stalled = evaluate(learner.policy, EnvFactory("ALE/Breakout-v5"), episodes=2, seed=1)
    assert stalled["stalled"] == 2 and max(stalled["lengths"]) < min(result["lengths"])


def test_game_score_info_marks_only_the_games_end():
    env = make_env(EnvFactory("ALE/Pong-v5"))
    try:
        env.reset(seed=0)
        _, _, terminated, truncated, info = env.step(0)
        assert not info[GAME_OVER] and info[GAME_SCORE] == 0.0 and not (terminated or truncated)
    finally:
        env.close()


def test_cartpole_without_velocities_shows_the_position_and_angle_of_cartpole():
    hidden = make_env(EnvFactory("prl/CartPoleNoVel-v1"))
    full = make_env(EnvFactory("CartPole-v1"))
    assert hidden.observation_space.shape == (2,)
    seen, _ = hidden.reset(seed=3)
    state, _ = full.reset(seed=3)
    steps = 0
    while True:
        np.testing.assert_array_equal(seen, state[[0, 2]])
        seen, reward, terminated, truncated, _ = hidden.step(steps % 2)
        state, full_reward, full_terminated, full_truncated, _ = full.step(steps % 2)
        steps += 1
        assert (reward, terminated, truncated) == (full_reward, full_terminated, full_truncated)
        if terminated or truncated:
            break
    assert steps < 500


@pytest.mark.parametrize(
    "env_id, kind, action_dims",
    [
        ("popgym-PositionOnlyCartPoleEasy-v0", "vector", (2,)),
        ("popgym-RepeatPreviousEasy-v0", "discrete", (4,)),
        ("popgym-CountRecallEasy-v0", "discrete", (27,)),
    ],
)
def test_popgym_ids_are_made_by_popgym(env_id, kind, action_dims):
    spec = probe_env(Config(env=env_id))
    (leaf,) = spec.obs_layout.leaves
    assert leaf.kind == kind and spec.action_dims == action_dims


def test_popgym_with_previous_action_shows_the_agents_last_answer_and_the_first_step():
    plain = make_env(EnvFactory("popgym-CountRecallEasy-v0"))
    env = make_env(EnvFactory("popgym-CountRecallEasy-v0", {"previous_action": True}))
    try:
        seen, _ = plain.reset(seed=4)
        (obs, previous, first), _ = env.reset(seed=4)
        np.testing.assert_array_equal(obs, seen)
        assert (previous, first) == (0, 1), "the null action and the first-step flag at an episode's start"
        for action in (5, 0, 26):
            seen, reward, *_ = plain.step(action)
            (obs, previous, first), shown_reward, *_ = env.step(action)
            np.testing.assert_array_equal(obs, seen)
            assert (previous, first, shown_reward) == (action, 0, reward)
    finally:
        env.close()
        plain.close()
    spec = probe_env(Config(env="popgym-CountRecallEasy-v0", env_kwargs={"previous_action": True}))
    assert [(leaf.kind, leaf.categories) for leaf in spec.obs_layout.leaves] == [
        ("discrete", (2, 2)),
        ("discrete", (27,)),
        ("discrete", (2,)),
    ]
    box = make_env(EnvFactory("popgym-PositionOnlyCartPoleEasy-v0", {"previous_action": True}))
    try:
        assert box.reset(seed=0)[0][1:] == (0, 1)
    finally:
        box.close()
    with pytest.raises(
        ConfigError, match=r"previous_action='yes' is not valid for popgym-CountRecallEasy-v0: give true"
    ):
        make_env(EnvFactory("popgym-CountRecallEasy-v0", {"previous_action": "yes"}))
