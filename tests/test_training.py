"""End-to-end runs: the acceptance commands, the README's commands and loop, and repeatability."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import toy_envs
from conftest import assert_same_tensors, run_script

from prl import train, tuned_config
from prl.config import from_flat
from prl.envs.factory import EnvFactory
from prl.run.checkpoint import load_checkpoint, load_policy
from prl.run.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"
METRIC_FIELDS = (
    "env_steps",
    "steps_per_s",
    "episode_return_mean",
    "policy_loss",
    "value_loss",
    "entropy",
    "approx_kl",
    "clipfrac",
    "explained_variance",
    "collect_s",
    "learn_s",
)


def train_command(tmp_path, *args):
    """Run scripts/train.py with `args`; check it exits cleanly and leaves nothing behind; return the run folder."""
    out = tmp_path / "run"
    result, survivors = run_script([TRAIN, *args, "--out", out, "--no-progress"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not survivors, f"processes left behind: {survivors}"
    return out


def test_cartpole_command_solves_and_writes_the_run_folder(tmp_path, no_leaks):
    out = train_command(
        tmp_path,
        "--env",
        "CartPole-v1",
        "--workers",
        "2",
        "--envs-per-worker",
        "16",
        "--steps",
        "100000",
        "--seed",
        "1",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_return_mean"] >= 475, summary
    for key in ("env", "env_steps", "wall_s", "steps_per_s", "eval_return_std", "eval_episodes"):
        assert key in summary, key
    assert summary["env"] == "CartPole-v1" and summary["env_steps"] >= 100_000 and summary["eval_episodes"] == 20

    config = json.loads((out / "config.json").read_text())
    assert config["workers"] == 2 and config["envs_per_worker"] == 16 and config["ppo"]["gamma"] == 0.99
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 49  # the CartPole preset keeps 2048 env steps per update
    for field in METRIC_FIELDS:
        assert field in lines[-1], field
    assert lines[-1]["episode_return_mean"] > lines[0]["episode_return_mean"]

    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["learner"]["env_steps"] == summary["env_steps"]
    assert checkpoint["config"]["env"] == "CartPole-v1"


def test_pendulum_command_reaches_the_target(tmp_path, no_leaks):
    out = train_command(
        tmp_path, "--env", "Pendulum-v1", "--workers", "2", "--envs-per-worker", "8", "--steps", "200000", "--seed", "1"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_return_mean"] >= -250, summary


def test_readme_train_command_learns_cartpole(tmp_path, no_leaks):
    readme = (ROOT / "README.md").read_text()
    assert "python scripts/train.py --workers 8 --envs-per-worker 4" in readme
    out = train_command(tmp_path, "--workers", "8", "--envs-per-worker", "4")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == "CartPole-v1"
    assert summary["eval_return_mean"] >= 475, summary


def test_readme_custom_loop_runs_and_learns(tmp_path, no_leaks):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- custom-loop:start -->\n```python\n(.*?)```\n<!-- custom-loop:end -->", readme, re.S)
    assert block, "README.md has lost its custom-loop block"
    script = tmp_path / "loop.py"
    script.write_text(block.group(1))
    result, survivors = run_script([script], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not survivors
    returns = [float(value) for value in re.findall(r"return (-?[\d.]+)", result.stdout)]
    steps = [int(value) for value in re.findall(r"^(\d+) steps", result.stdout, re.M)]
    assert steps[-1] >= 30_000
    assert returns[-1] > 3 * returns[0] and returns[-1] > 100, result.stdout[-2000:]


DETERMINISTIC_FIELDS = ("env_steps", "episode_return_mean", "policy_loss", "value_loss", "approx_kl", "policy_lag")


def logged(out):
    """The run's metrics.jsonl lines, keeping the fields that a fixed seed determines."""
    lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{name: line[name] for name in DETERMINISTIC_FIELDS} for line in lines]


def small_run(out, env="CartPole-v1", **options):
    values = dict(
        workers=2,
        envs_per_worker=4,
        rollout_steps=64,
        steps=2048,
        seed=7,
        progress=False,
        eval_episodes=3,
        out=str(out),
    )
    return tuned_config(env, **{**values, **options})


@pytest.mark.parametrize("mode", ["sync", "overlap"])
def test_fixed_seed_repeats_exactly(mode, tmp_path, no_leaks):
    first = train(small_run(tmp_path / "a", mode=mode))
    second = train(small_run(tmp_path / "b", mode=mode))
    for key in ("env_steps", "episode_return_mean", "eval_return_mean", "eval_return_std"):
        assert first[key] == second[key], key
    assert logged(tmp_path / "a") == logged(tmp_path / "b")
    assert len(logged(tmp_path / "a")) == 4
    lags = {line["policy_lag"] for line in logged(tmp_path / "a")[1:]}
    assert lags == ({1} if mode == "overlap" else {0})
    different = train(small_run(tmp_path / "c", mode=mode, seed=8))
    assert different["episode_return_mean"] != first["episode_return_mean"]


def test_spawned_workers_give_the_same_run_as_the_forkserver(tmp_path, no_leaks):
    train(small_run(tmp_path / "forkserver", start_method="forkserver", eval_episodes=0))
    train(small_run(tmp_path / "spawn", start_method="spawn", eval_episodes=0))
    assert logged(tmp_path / "spawn") == logged(tmp_path / "forkserver")
    assert json.loads((tmp_path / "spawn" / "config.json").read_text())["start_method"] == "spawn"


def test_an_rnd_run_trains_end_to_end_and_logs_its_intrinsic_rewards(tmp_path, no_leaks):
    out = tmp_path / "rnd"
    summary = train(small_run(out, env="MountainCar-v0", steps=4096, rnd=True, int_coef=5.0, ext_coef=1.0))
    assert summary["env_steps"] == 4096 and summary["eval_return_mean"] <= -1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        assert line["intrinsic_reward"] > 0 and line["rnd_loss"] > 0 and line["int_value_loss"] >= 0
    assert lines[-1]["rnd_loss"] < lines[0]["rnd_loss"], "the predictor learns the states it sees"
    state = load_checkpoint(out)["learner"]
    assert state["rnd"] is not None and state["int_scaler"]["count"] > 0


def test_save_every_writes_checkpoints_during_the_run(tmp_path, monkeypatch, no_leaks):
    import prl.run.training

    saved_at = []
    real_save = prl.run.training.save_checkpoint

    def save(path, payload):
        saved_at.append((Path(path).name, payload["learner"]["updates"]))
        real_save(path, payload)

    monkeypatch.setattr(prl.run.training, "save_checkpoint", save)
    train(small_run(tmp_path / "run", steps=5 * 1024, envs_per_worker=8, save_every=2, eval_episodes=0))
    assert saved_at == [("checkpoint.pt", 2), ("checkpoint.pt", 4), ("checkpoint.pt", 5)]
    assert load_checkpoint(tmp_path / "run")["learner"]["updates"] == 5


def test_training_runs_on_every_device_present(device, tmp_path, no_leaks):
    from prl.run.training import run_training

    out = tmp_path / device
    config = small_run(out, device=device, eval_episodes=2, normalize_obs=True, normalize_reward=True)
    summary, learner = run_training(config)
    assert learner.device.type == device and next(learner.policy.parameters()).device.type == device
    assert summary["env_steps"] == 2048 and summary["eval_episodes"] == 2
    lines = logged(out)
    assert lines[0]["policy_lag"] == 0 and abs(lines[0]["approx_kl"]) < 0.1
    # The checkpoint loads on the CPU and holds exactly the learner's weights.
    saved = load_checkpoint(out)["learner"]["policy"]
    assert all(tensor.device.type == "cpu" for tensor in saved.values())
    assert_same_tensors(saved, learner.policy.state_dict(), "checkpoint")


def image_run(out, env, **options):
    """Settings for the one-step image tasks of toy_envs: 128-step batches, 4 epochs of 32."""
    values = dict(
        env=env,
        workers=2,
        envs_per_worker=4,
        rollout_steps=16,
        steps=8192,
        epochs=4,
        minibatch_size=32,
        lr=1e-3,
        seed=1,
        progress=False,
        eval_episodes=50,
        out=str(out),
    )
    return from_flat({**values, **options})


def test_an_image_env_learns_from_its_pixels(tmp_path, no_leaks):
    summary = train(image_run(tmp_path, toy_envs.CueImageEnv))
    assert summary["eval_return_mean"] >= 0.9  # chance is 1/3


def test_a_dict_of_an_image_and_a_vector_trains_checkpoints_resumes_and_evaluates(tmp_path, no_leaks):
    out = tmp_path / "dict"
    config = image_run(out, toy_envs.ImageAndVectorEnv, steps=4096, eval_episodes=0)
    assert train(config)["env_steps"] == 4096
    resumed = train(dataclasses.replace(config, steps=8192, eval_episodes=50), resume_from=str(out))
    assert resumed["env_steps"] == 8192
    assert resumed["eval_return_mean"] >= 0.9  # chance is 1/2: the reward needs both keys
    policy, _ = load_policy(out, env=toy_envs.ImageAndVectorEnv)
    assert policy.encoder is not None and len(policy.encoder.image_nets) == 1
    again = evaluate(policy, EnvFactory(toy_envs.ImageAndVectorEnv), episodes=50, seed=3)
    assert again["return_mean"] >= 0.9
