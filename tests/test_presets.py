"""Presets learn: one short run per family of envs, with a fixed seed and a step budget (the full suites live in benchmarks/learning.py)."""

import json

from prl import train, tuned_config
from prl.envs.presets import PRESETS


def test_every_preset_builds_a_valid_config_in_any_worker_layout():
    for env in PRESETS:
        for workers, envs in ((2, 16), (8, 4), (1, 1)):
            config = tuned_config(env, workers=workers, envs_per_worker=envs)
            assert config.steps >= config.batch_size, env


def test_classic_control_mountain_car_continuous_reaches_the_flag(tmp_path, no_leaks):
    # Reaching the flag pays +100, so a return above 50 means every evaluation episode got there.
    summary = train(tuned_config("MountainCarContinuous-v0", seed=1, progress=False, eval_episodes=5))
    assert summary["env_steps"] >= 100_000
    assert summary["eval_return_mean"] > 50, summary


def test_box2d_lunar_lander_learns_to_stop_crashing(tmp_path, no_leaks):
    out = tmp_path / "lander"
    train(tuned_config("LunarLander-v3", seed=1, steps=100_000, progress=False, eval_episodes=0, out=str(out)))
    returns = [json.loads(line)["episode_return_mean"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert returns[0] < -150, "a fresh policy crashes"
    assert returns[-1] > returns[0] + 100, returns


def test_mujoco_hopper_hops_from_the_defaults(no_leaks):
    summary = train(tuned_config("Hopper-v5", seed=1, steps=100_000, progress=False, eval_episodes=5))
    assert summary["eval_return_mean"] > 400, summary  # a random policy falls over at about 20


def test_minigrid_empty_room_is_crossed_from_the_image_alone(no_leaks):
    # Reward 1 - 0.9 * steps / 100 on reaching the goal: 0.9 and above is a near-shortest path.
    summary = train(tuned_config("MiniGrid-Empty-5x5-v0", seed=1, progress=False, eval_episodes=10))
    assert summary["env_steps"] >= 50_000
    assert summary["eval_return_mean"] >= 0.9, summary
