"""The throughput benchmark's pieces work against the current API (the full run lives in benchmarks/)."""

import re
import sys
from pathlib import Path

import pytest

from prl.cli import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import learning  # noqa: E402  (a renamed or broken benchmark must fail here, not skip)
import throughput  # noqa: E402


def test_collection_measurement_counts_whole_batches_over_the_time_it_ran(no_leaks):
    record = throughput.prl_collection("CartPole-v1", workers=1, envs=2, seconds=0.3)
    assert (record["workers"], record["envs"]) == (1, 2)
    batch = 1 * 2 * throughput.ROLLOUT_STEPS
    assert record["steps"] > 0 and record["steps"] % batch == 0
    assert record["seconds"] >= 0.3 and record["pool_start_s"] > 0
    assert record["steps_per_s"] == pytest.approx(record["steps"] / record["seconds"])


def test_efficiency_divides_by_the_best_floor_at_the_same_envs_per_worker():
    results = {
        "collection_floor": [
            {"envs": 4, "steps_per_s": 100.0},
            {"envs": 4, "steps_per_s": 150.0},
            {"envs": 8, "steps_per_s": 400.0},
            {"envs": 8, "skipped": "no numpy actor"},
        ],
        "prl_collection": [
            {"workers": 1, "envs": 4, "steps_per_s": 120.0},
            {"workers": 1, "envs": 8, "steps_per_s": 300.0},
        ],
    }
    throughput.add_efficiency(results)
    assert [r["efficiency"] for r in results["prl_collection"]] == [0.8, 0.75]


def test_an_end_to_end_run_reads_its_summary_and_a_failed_one_says_why():
    record = throughput.prl_training("CartPole-v1", workers=1, envs=4, steps=2048)
    assert record["env_steps"] == 2048 and record["env"] == "CartPole-v1"
    assert record["process_wall_s"] > record["train_s"] > 0
    assert record["steps_per_s"] == pytest.approx((record["env_steps"]) / record["train_s"])
    failed = throughput.run_train(["--env", "CartPol-v1", "--out", "TMP", "--no-progress"])
    assert "unknown environment id 'CartPol-v1'" in failed["skipped"] and "exit code 2" in failed["skipped"]


@pytest.mark.parametrize("shape", [(1, 4), (2, 32), (8, 4)])
@pytest.mark.parametrize("ppo, overlap", [(None, False), (None, True), ("sb3", False)])
def test_training_flags_parse_into_the_intended_config(shape, ppo, overlap):
    settings = throughput.SB3_LIKE_PPO if ppo else None
    args = throughput.train_args("CartPole-v1", *shape, 20_000, settings, overlap)
    config = parse_config(["out" if arg == "TMP" else arg for arg in args])
    assert (config.workers, config.envs_per_worker, config.overlap) == (*shape, overlap)
    if ppo:
        assert config.ppo.epochs == 20 and config.rollout_steps == 32 and config.ppo.gamma == 0.98
    else:
        assert config.ppo.epochs == 3 and config.batch_size >= 2048 or shape == (1, 4)


def test_ratios_compare_against_the_right_runs():
    def run(workers, envs, rate, overlap=False, sb3=False):
        return {"workers": workers, "envs": envs, "steps_per_s": rate, "overlap": overlap, "sb3_settings": sb3}

    results = {
        "prl_training": [
            run(2, 32, 50.0),
            run(8, 4, 40.0),
            run(4, 64, 52.0),
            run(2, 32, 64.0, overlap=True),
            run(2, 32, 10.0, sb3=True),
        ],
        "reference": {"sb3_dummy": {"steps_per_s": 5.0}},
    }
    values = {re.sub(r" \([^)]*\)", "", row["ratio"]): row["value"] for row in throughput.ratios(results)}
    assert values["prl end-to-end, default / SB3 DummyVecEnv"] == 10.0
    assert values["prl end-to-end, best / SB3 DummyVecEnv"] == pytest.approx(12.8)
    assert values["prl at SB3's PPO settings / SB3 DummyVecEnv"] == 2.0
    assert values["README shape / best synchronous shape"] == pytest.approx(40 / 52)


def test_learning_rows_compare_the_mean_over_seeds_with_the_target():

    def run(seed, evaluation, wall=10.0):
        return {
            "env": "MountainCar-v0",
            "seed": seed,
            "steps": 1_000_000,
            "eval_return_mean": evaluation,
            "train_return_last100": evaluation - 5,
            "process_wall_s": wall,
            "curve": [],
        }

    solved = learning.summarize("MountainCar-v0", [run(1, -100.0), run(2, -104.0), run(3, -108.0)], False, False)
    assert solved["eval_mean"] == pytest.approx(-104.0) and solved["met"] and solved["goal_reached"] == "3/3"
    one_stuck = learning.summarize("MountainCar-v0", [run(1, -60.0), run(2, -60.0), run(3, -200.0)], False, False)
    assert one_stuck["eval_mean"] > -110 and not one_stuck["met"], "every seed must reach the goal"
    failed = learning.summarize(
        "MountainCar-v0", [run(1, -100.0), {"env": "MountainCar-v0", "seed": 2, "failed": "x"}], False, False
    )
    assert failed["finished"] == 1 and not failed["met"]
    assert "| MountainCar-v0 | 1,000,000 | -104.0 +- 3.3 (3 seeds) |" in learning.table([solved])
    assert learning.budget(learning.TARGETS["Acrobot-v1"], no_preset=True, quick=False) == 300_000
    assert learning.budget(learning.TARGETS["Acrobot-v1"], no_preset=False, quick=True) == 50_000
