"""The throughput benchmark's pieces work against the current API (the full run lives in benchmarks/)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prl import tuned_config
from prl.config import Config
from prl.envs.factory import probe_env
from prl.run.cli import parse_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _plan  # noqa: E402
import _reference  # noqa: E402
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
    batch = tuned_config("CartPole-v1", workers=1, envs_per_worker=4).batch_size
    assert record["env_steps"] == throughput.MIN_UPDATES * batch, "a run makes at least MIN_UPDATES updates"
    assert record["env"] == "CartPole-v1"
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
    assert (config.workers, config.envs_per_worker, config.mode == "overlap") == (*shape, overlap)
    if ppo:
        assert config.ppo.epochs == 20 and config.rollout_steps == 32 and config.ppo.gamma == 0.98
        # 1 x 4 envs x 32 steps is a 128-sample batch: only there must SB3's minibatch of 256 shrink
        assert config.ppo.minibatch_size == (128 if shape == (1, 4) else 256)
    else:
        # CartPole's preset fits the rollout to the envs, so that every shape learns from 2048-step batches
        assert config.ppo.epochs == 3 and config.batch_size == 2048
        assert config.rollout_steps == {(1, 4): 512, (2, 32): 32, (8, 4): 64}[shape]


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
    assert values["prl end-to-end, default / SB3 SubprocVecEnv"] is None, "not measured: no ratio"
    memories = [{"workers": 2, "envs": 32, "steps_per_s": 20.0, "recurrent": "lstm", "recurrent_size": 64}]
    rows = {row["ratio"]: row["value"] for row in throughput.ratios({**results, "recurrent_training": memories})}
    assert rows["prl end-to-end (2x32), LSTM 64 / MLP"] == 0.4, "the memory against the MLP at the same shape"

    # an Atari run: its preset's shape is the default, SB3 ran with 2 threads and with 1
    results["settings"] = {"env": "ALE/Breakout-v5", "default_shape": (8, 4)}
    results["reference"] = {
        "sb3_dummy": {"steps_per_s": 4.0, "torch_threads": 2},
        "sb3_subproc": {"steps_per_s": 5.0, "torch_threads": 2},
        "sb3_dummy_one_thread": {"steps_per_s": 2.0, "torch_threads": 1},
    }
    results["prl_collection"] = [{"workers": 8, "envs": 4, "steps_per_s": 300.0, "efficiency": 0.75}]
    rows = {row["ratio"]: row for row in throughput.ratios(results)}
    assert rows["prl end-to-end, default (8x4) / SB3 DummyVecEnv (2 torch threads)"]["value"] == 10.0
    assert rows["prl end-to-end, default (8x4) / SB3 DummyVecEnv (1 torch thread)"]["value"] == 20.0
    assert rows["prl end-to-end, default (8x4) / SB3 SubprocVecEnv (2 torch threads)"]["value"] == 8.0
    floor = rows["prl collection (8x4) / 2 x one-process floor, same network"]
    assert floor["value"] == 0.75 and floor["denominator"] == 400.0
    assert not any("Sample Factory 11,400" in name or "SB3's PPO settings" in name for name in rows)
    # Sample Factory's Atari figures are in frames: prl's fastest run, times 4 frames per env step
    frames = rows[
        "prl end-to-end frames/s, best (2x32, overlap, auto inference) / Sample Factory 48,000 (10 cores, 1 GPU)"
    ]
    assert frames["numerator"] == 256.0 and frames["value"] == pytest.approx(256 / 48_000)
    assert "NOT measured here" in frames["source"]
    assert rows[
        "prl end-to-end frames/s, best (2x32, overlap, auto inference) / Sample Factory 136,000 (36 cores, 4 GPUs)"
    ]


def test_image_envs_get_fewer_shapes_their_preset_shape_and_sb3_at_the_learners_threads():
    image = probe_env(Config(env="MiniGrid-Empty-5x5-v0"))
    assert _plan.plan_for(image, quick=False) == _plan.IMAGE_PLAN
    assert _plan.plan_for(image, quick=True) == _plan.IMAGE_QUICK
    assert _plan.plan_for(probe_env(Config()), quick=True) == _plan.QUICK
    assert throughput.default_shape("ALE/Breakout-v5") == (2, 4)
    assert throughput.default_shape("CartPole-v1") == throughput.DEFAULT_SHAPE
    assert [run[1:] for run in throughput.sb3_runs("ALE/Breakout-v5")] == [
        ("DummyVecEnv", 2),
        ("SubprocVecEnv", 2),
        ("DummyVecEnv", 1),
    ]
    assert [run[2] for run in throughput.sb3_runs("CartPole-v1")] == [1, 1]


def test_the_floors_step_atari_with_its_preprocessing_and_act_with_the_preset_cnn():
    env_id = "ALE/Breakout-v5"
    spec = probe_env(Config(env=env_id))
    policy = tuned_config(env_id).policy
    record = _reference.collection_floor(env_id, spec, 2, 0.2, "torch", policy)
    assert record["envs"] == 2 and record["steps"] > 0 and record["steps"] % 2 == 0
    assert "torch policy" in _reference.collection_floor(env_id, spec, 2, 0.2, "worker", policy)["skipped"]
    assert _reference.env_recipe(env_id)().observation_space.shape == (4, 84, 84)


def test_the_buffer_keeps_atari_frames_in_uint8_a_quarter_of_their_float32_size():
    spec = probe_env(Config(env="ALE/Breakout-v5"))
    memory = throughput.measure_memory("ALE/Breakout-v5", spec)
    stored = 2 * (128 + 1) * 4  # the preset's slots (workers) x (rollout steps + 1) x envs per worker
    assert memory["native"]["obs_bytes"] == stored * 4 * 84 * 84 == stored * memory["bytes_per_obs"]
    assert memory["float32"]["obs_bytes"] == 4 * memory["native"]["obs_bytes"] and memory["obs_ratio"] == 4.0
    others = memory["native"]["total_bytes"] - memory["native"]["obs_bytes"]
    assert others == memory["float32"]["total_bytes"] - memory["float32"]["obs_bytes"] > 0


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


def test_each_async_row_is_compared_with_the_sync_row_of_its_env():
    def row(name, evaluation, wall, rate, lag=0.0):
        return {
            "env": name,
            "steps": 1_000_000,
            "eval_mean": evaluation,
            "wall_s_mean": wall,
            "steps_per_s_mean": rate,
            "policy_lag_mean": lag,
        }

    rows = [
        row("HalfCheetah-v5", 5000.0, 300.0, 3500.0),
        row("HalfCheetah-v5 --mode async", 4600.0, 200.0, 5250.0, 0.9),
    ]
    (compared,) = learning.async_beside_sync(rows + [row("CartPole-v1", 500.0, 3.0, 50_000.0)])
    assert compared["env"] == "HalfCheetah-v5" and compared["eval_ratio"] == pytest.approx(0.92)
    assert compared["speedup"] == pytest.approx(1.5) and compared["steps_per_s_ratio"] == pytest.approx(1.5)
    assert "| HalfCheetah-v5 | 1,000,000 | 5000.0, 4600.0 (0.92) | 300 s, 200 s (1.50x) | 1.50x | 0.90 |" in (
        learning.async_table([compared])
    )
    assert learning.TARGETS["CartPole-v1 --mode async"].target == 475.0


def test_the_straggler_benchmark_holds_async_against_sync_and_the_bound():
    import _stragglers

    runs = [
        {"workers": 2, "mode": "sync", "steps_per_s": 2000.0},
        {"workers": 2, "mode": "overlap", "steps_per_s": 2500.0},
        {"workers": 2, "mode": "async", "steps_per_s": 3600.0, "of_bound": 0.9},
    ]
    ratios = {row["ratio"]: row["value"] for row in _stragglers.straggler_ratios(runs)}
    assert ratios == {
        "stragglers, 2 workers: async / sync": 1.8,
        "stragglers, 2 workers: async / overlap": 1.44,
        "stragglers, 2 workers: async / bound": 0.9,
    }
    args = _stragglers.train_args(8, "async", 160_000)
    config = parse_config(["out" if arg == "TMP" else arg for arg in args])
    assert (config.env, config.workers, config.mode, config.envs_per_worker) == ("prl/Stragglers-v0", 8, "async", 4)


def test_the_stragglers_env_sleeps_before_the_same_seeded_steps(monkeypatch):
    import gymnasium as gym

    import prl.envs.tasks as tasks

    def slow_steps(seed):
        slept = []
        monkeypatch.setattr(tasks.time, "sleep", lambda seconds: slept.append((len(steps), seconds)))
        env = gym.make("prl/Stragglers-v0", every=10, delay_s=0.5)
        env.reset(seed=seed)
        steps = []
        for _ in range(300):
            steps.append(1)
            _, _, terminated, truncated, _ = env.step(0)
            if terminated or truncated:
                env.reset()
        return slept

    first = slow_steps(4)
    assert first == slow_steps(4) and first != slow_steps(5)
    assert 10 <= len(first) <= 60 and {seconds for _, seconds in first} == {0.5}


def test_every_suite_row_has_a_target_and_the_one_frame_breakout_row_gives_train_py_its_flags():
    for suite, rows in learning.SUITES.items():
        assert all(row in learning.TARGETS for row in rows), suite
    one_frame = learning.TARGETS[learning.SUITES["atari-memory"][1]]
    flags = dict(zip(one_frame.args[::2], one_frame.args[1::2]))
    assert one_frame.env == "ALE/Breakout-v5" and json.loads(flags["--env-kwargs"]) == {"frame_stack": 1}
    assert (flags["--recurrent"], flags["--recurrent-size"]) == ("lstm", "128")


def test_the_memory_suites_ablation_must_stay_below_its_ceiling_and_a_reference_is_compared_by_wall_time():
    ablation = "prl/CartPoleNoVel-v1 --recurrent none"
    assert ablation in learning.SUITES["memory"] and learning.TARGETS[ablation].args == ("--recurrent", "none")
    assert learning.file_name(ablation) == "prl-CartPoleNoVel-v1-recurrent-none"

    def run(seed, evaluation, env=ablation):
        return {
            "env": env,
            "seed": seed,
            "steps": 200_000,
            "eval_return_mean": evaluation,
            "train_return_last100": evaluation,
            "process_wall_s": 20.0,
            "steps_per_s": 20_000.0,
            "curve": [],
        }

    low = learning.summarize(ablation, [run(1, 40.0), run(2, 50.0)], False, False)
    high = learning.summarize(ablation, [run(1, 400.0), run(2, 500.0)], False, False)
    assert low["met"] and not high["met"]
    assert "| < 200 | yes |" in learning.table([low])
    memory = "prl/CartPoleNoVel-v1"
    reference = {
        "label": "sb3-contrib RecurrentPPO",
        "steps": 100_000,
        "eval_return_mean": 500.0,
        "process_wall_s": 300.0,
        "steps_per_s": 400.0,
    }
    row = learning.side_by_side(memory, [run(1, 500.0, memory), run(2, 490.0, memory)], reference)
    assert row["speedup"] == pytest.approx(15.0) and row["prl_eval_mean"] == pytest.approx(495.0)
    assert row["steps_per_s_ratio"] == pytest.approx(50.0)
    assert "| 15.0x | 50.0x |" in learning.side_by_side_table([row])
    failed = learning.side_by_side(memory, [run(1, 500.0, memory)], {"label": "x", "failed": "exit code 2: missing"})
    assert "failed: exit code 2: missing" in learning.side_by_side_table([failed])


def test_a_reference_run_is_smoothed_over_its_last_100_episodes_and_replotted_beside_prl(tmp_path):
    episodes = [{"env_steps": 10 * i, "wall_s": i / 10, "return": float(i)} for i in range(1, 151)]
    (tmp_path / "other.jsonl").write_text("\n".join(json.dumps(e) for e in episodes) + "\n")
    reference = learning.load_reference(f"Other PPO={tmp_path / 'other.jsonl'}")
    assert reference["label"] == "Other PPO" and reference["episodes"] == 150
    assert reference["curve"][9] == {"env_steps": 100, "wall_s": 1.0, "return": 5.5}
    assert reference["curve"][-1]["return"] == sum(range(51, 151)) / 100
    with pytest.raises(ValueError, match="LABEL=FILE"):
        learning.load_reference(str(tmp_path / "other.jsonl"))

    curve = [{"env_steps": 100 * i, "wall_s": float(i), "return": float(i)} for i in range(1, 20)]
    run = {"env": "ALE/Breakout-v5", "seed": 1, "curve": curve}
    (tmp_path / "learning.json").write_text(json.dumps({"runs": {"ALE/Breakout-v5": [run]}}))
    assert learning.main(["--replot", str(tmp_path), "--reference", f"Other PPO={tmp_path / 'other.jsonl'}"]) == 0
    assert (tmp_path / "learning_ALE-Breakout-v5.png").stat().st_size > 0
    assert "Other PPO" in json.loads((tmp_path / "learning.json").read_text())["references"]
    assert learning.main(["--replot", str(tmp_path / "missing")]) == 2


def test_each_inference_mode_gets_its_rows_central_is_compared_with_worker_and_its_process_with_its_thread():
    args = throughput.train_args("CartPole-v1", 2, 32, 20_000, None, True, "central")
    config = parse_config(["out" if arg == "TMP" else arg for arg in args])
    assert config.inference == "central" and config.mode == "overlap"
    assert "--inference" not in throughput.train_args("CartPole-v1", 2, 32, 20_000)
    args = throughput.train_args("CartPole-v1", 2, 32, 20_000, None, False, "central-process")
    config = parse_config(["out" if arg == "TMP" else arg for arg in args])
    assert config.inference == "central" and config.inference_server == "process"
    args = throughput.train_args("CartPole-v1", 2, 32, 20_000, None, False, "central")
    assert "--inference-server" not in args, "central alone is prl's own default server"

    def run(rate, inference, overlap=False):
        return {
            "workers": 2,
            "envs": 32,
            "steps_per_s": rate,
            "overlap": overlap,
            "sb3_settings": False,
            "inference": inference,
        }

    results = {
        "settings": {
            "env": "CartPole-v1",
            "default_shape": (2, 32),
            "inference": ("worker", "central", "central-thread", "central-process"),
        },
        "prl_training": [
            run(50.0, "worker"),
            run(60.0, "worker", True),
            run(25.0, "central"),
            run(45.0, "central", True),
            run(25.0, "central-thread"),
            run(45.0, "central-thread", True),
            run(20.0, "central-process"),
            run(54.0, "central-process", True),
        ],
        "prl_collection": [
            {"workers": 2, "envs": 32, "steps_per_s": 100.0, "efficiency": 0.9, "inference": "worker"},
            {"workers": 2, "envs": 32, "steps_per_s": 40.0, "efficiency": 0.4, "inference": "central"},
            {"workers": 2, "envs": 32, "steps_per_s": 40.0, "efficiency": 0.4, "inference": "central-thread"},
            {"workers": 2, "envs": 32, "steps_per_s": 30.0, "efficiency": 0.3, "inference": "central-process"},
        ],
        "reference": {"sb3_dummy": {"steps_per_s": 5.0, "torch_threads": 1}},
    }
    rows = {row["ratio"]: row["value"] for row in throughput.ratios(results)}
    assert rows["prl end-to-end, default (2x32) / SB3 DummyVecEnv (1 torch thread)"] == 10.0, "the first mode's run"
    assert rows["prl end-to-end (2x32), central / worker inference"] == 0.5
    assert rows["prl end-to-end (2x32, overlap), central / worker inference"] == 0.75
    assert rows["prl collection (2x32), central / worker inference"] == 0.4
    assert rows["prl end-to-end (2x32), central inference, server process / server thread"] == 0.8
    assert rows["prl end-to-end (2x32, overlap), central inference, server process / server thread"] == 1.2
    assert rows["prl collection (2x32), central inference, server process / server thread"] == 0.75
    assert rows["prl collection (2x32) / 2 x one-process floor, same network"] == pytest.approx(0.9)

    results["settings"]["inference"] = ("worker", "central-thread", "central-process")
    rows = {row["ratio"]: row["value"] for row in throughput.ratios(results)}
    assert rows["prl end-to-end (2x32), central-process / worker inference"] == 0.4, "the default server's rows"
    assert rows["prl collection (2x32), central-process / worker inference"] == 0.3


def test_the_ray_rows_compare_with_the_local_pool_at_the_default_shape():
    def run(rate, backend):
        shape = {"workers": 2, "envs": 32, "overlap": False, "sb3_settings": False, "inference": "auto"}
        return {**shape, "steps_per_s": rate, "backend": backend}

    results = {
        "settings": {"env": "CartPole-v1", "default_shape": (2, 32), "inference": ("auto",)},
        "prl_training": [run(40.0, "local"), run(30.0, "ray")],
        "prl_collection": [
            {"workers": 2, "envs": 32, "steps_per_s": 100.0, "efficiency": 0.9, "inference": "auto"},
            {"workers": 2, "envs": 32, "steps_per_s": 80.0, "efficiency": 0.7, "inference": "auto", "backend": "ray"},
        ],
        "reference": {"sb3_dummy": {"steps_per_s": 4.0, "torch_threads": 1}},
    }
    rows = {row["ratio"]: row["value"] for row in throughput.ratios(results)}
    assert rows["prl end-to-end, default (2x32) / SB3 DummyVecEnv (1 torch thread)"] == 10.0, "the local run"
    assert rows["Ray backend / local pool, end to end (2x32)"] == 0.75
    assert rows["Ray backend / local pool, collection (2x32)"] == 0.8
    args = throughput.train_args("CartPole-v1", 2, 32, 20_000, backend="ray")
    assert parse_config(["out" if arg == "TMP" else arg for arg in args]).backend == "ray"


def training_stand_in(trained: list, cut_at=None):
    """A stand-in for `throughput.prl_training` that appends each run's (workers, envs, overlap,
    inference) to `trained` and rates central 2.5 times worker; run number `cut_at` raises
    KeyboardInterrupt instead, as a run cut short would."""

    def fake_training(env_id, workers, envs, steps, ppo=None, overlap=False, inference="auto", *_, **__):
        trained.append((workers, envs, overlap, inference))
        if len(trained) == cut_at:
            raise KeyboardInterrupt
        return {
            "workers": workers,
            "envs": envs,
            "overlap": overlap,
            "sb3_settings": ppo is not None,
            "inference": inference,
            "backend": "local",
            "steps_per_s": {"worker": 10.0, "central": 25.0}[inference] * workers,
        }

    return fake_training


def test_a_training_sweep_trains_every_inference_mode_at_every_shape_and_compares_them(monkeypatch):
    trained = []
    monkeypatch.setattr(throughput, "prl_training", training_stand_in(trained))
    monkeypatch.setattr(throughput.ref, "missing", lambda name: f"{name} is left out here")
    plan = throughput.replace(
        _plan.IMAGE_QUICK, workers=(1, 16), envs=(8,), inference=("worker", "central"), train_sweep=True
    )
    records = throughput.measure_training("ALE/Breakout-v5", plan)
    for mode in ("worker", "central"):
        assert {(1, 8, False, mode), (16, 8, False, mode)} <= set(trained)
    results = {
        "settings": {"env": "ALE/Breakout-v5", "default_shape": (2, 4), "inference": ("worker", "central")},
        "prl_training": records,
        "prl_collection": [],
        "reference": {},
    }
    rows = {row["ratio"]: row["value"] for row in throughput.ratios(results)}
    assert rows["prl end-to-end (16x8), central / worker inference"] == 2.5
    assert rows["prl end-to-end (1x8), central / worker inference"] == 2.5
    best = "prl end-to-end frames/s, best (16x8, central inference) / Sample Factory 48,000 (10 cores, 1 GPU)"
    assert rows[best] == pytest.approx(16 * 25.0 * 4 / 48_000)


def test_a_run_cut_short_keeps_every_record_it_measured_in_the_journal(monkeypatch, tmp_path):
    monkeypatch.setattr(throughput, "prl_training", training_stand_in([], cut_at=3))
    monkeypatch.setattr(throughput.ref, "missing", lambda name: f"{name} is left out here")
    monkeypatch.setattr(throughput, "JOURNAL", tmp_path / "records.jsonl")
    plan = throughput.replace(_plan.IMAGE_QUICK, workers=(1, 16), envs=(8,), inference=("worker",), train_sweep=True)
    with pytest.raises(KeyboardInterrupt):
        throughput.measure_training("ALE/Breakout-v5", plan)
    lines = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [(line["figure"], line["workers"]) for line in lines] == [("prl_training", 1), ("prl_training", 16)]


def test_the_modes_run_side_by_side_at_each_shape(monkeypatch):
    trained = []
    monkeypatch.setattr(throughput, "prl_training", training_stand_in(trained))
    monkeypatch.setattr(throughput.ref, "missing", lambda name: f"{name} is left out here")
    plan = throughput.replace(
        _plan.IMAGE_QUICK, workers=(16, 1), envs=(8,), inference=("worker", "central"), train_sweep=True
    )
    throughput.measure_training("ALE/Breakout-v5", plan)
    assert trained[:4] == [
        (16, 8, False, "worker"),
        (16, 8, False, "central"),
        (1, 8, False, "worker"),
        (1, 8, False, "central"),
    ]
    assert len(trained) == len(set(trained)) == 4 + 2 + 2 + 1, (
        "each run once: the grid, the default and README shapes, overlap"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_gpu_check_refuses_a_machine_without_cuda_and_an_unknown_part_in_one_sentence(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    for args, said in (([], "sees no CUDA device"), (["bogus"], "unknown part 'bogus'")):
        environment = {**os.environ, "PYTHON": sys.executable}
        command = ["bash", script, tmp_path / "out", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=environment)
        assert result.returncode == 2 and said in result.stderr, result.stderr
    assert not (tmp_path / "out" / "pytest.log").exists(), "nothing ran"


def test_a_solve_run_is_split_into_import_startup_training_evaluation_and_exit():
    summary = {"started_at": 1000.9, "startup_s": 0.4, "train_s": 2.5, "eval_s": 0.3, "wall_s": 3.3}
    split = throughput.phases(summary, launched_at=1000.0, process_wall_s=4.5)
    assert tuple(split) == throughput.PHASES
    assert split["import_s"] == pytest.approx(0.9) and split["exit_s"] == pytest.approx(0.4)
    assert sum(split.values()) == pytest.approx(4.5)
    assert throughput.phases({"wall_s": 3.3}, 1000.0, 4.5) == {}


def test_a_pettingzoo_envs_floors_count_agent_steps():
    import multiprocessing

    env_id = "pettingzoo:mpe2.simple_spread_v3"
    spec = probe_env(Config(env=env_id, envs_per_worker=3))
    record = _reference.collection_floor(env_id, spec, 6, 0.2, "worker")
    assert record["envs"] == 6 and record["steps"] > 0 and record["steps"] % 6 == 0, "2 envs of 3 agents each step"
    raw = _reference.raw_floor(env_id, 1, 0.2, multiprocessing.get_context("forkserver"))
    assert raw["steps"] > 0 and raw["steps"] % 3 == 0
