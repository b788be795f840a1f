"""scripts/train.py refuses bad input with one sentence and exit code 2, leaving nothing running."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_script

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"


def run_train(args, tmp_path):
    return run_script([TRAIN, "--out", tmp_path / "run", "--no-progress", *args], cwd=tmp_path, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "CartPol-v1"], "unknown environment id 'CartPol-v1'; did you mean CartPole-v1"),
        (["--env", "Taxi-v1"], "gymnasium cannot make 'Taxi-v1'"),
        (["--encoder", "resnet"], "encoder must be auto, mlp, nature, grid or module:function, got 'resnet'."),
        (["--workers", "0"], "workers must be between 1 and 256, got 0."),
        (["--minibatch-size", "999999"], "is larger than the batch"),
        (["--lr", "-0.1"], "lr must be a positive number"),
        (
            ["--env-kwargs", '{"max_episode_steps": 0}'],
            "CartPole-v1 cannot be made with env_kwargs {'max_episode_steps': 0} (ValueError: ",
        ),
        (["--seed", str(2**70)], "seed must be a non-negative integer below 2**64"),
        (["--vf-coef", "inf"], "vf_coef must be a finite number, got inf."),
    ],
)
def test_user_errors_exit_2_with_one_sentence(args, message, tmp_path, no_leaks):
    result, survivors = run_train(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not survivors


def test_unknown_flag_is_an_argparse_error(tmp_path):
    result, _ = run_train(["--wrokers", "2"], tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --wrokers" in result.stderr


def test_help_lists_options_with_their_docs(tmp_path):
    result = subprocess.run([sys.executable, str(TRAIN), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "--envs-per-worker" in result.stdout and "--rollout-steps" in result.stdout
    assert "Adam learning rate." in result.stdout


def test_an_out_folder_holding_a_run_is_refused_without_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    result, survivors = run_train(["--steps", "2048"], tmp_path)
    assert result.returncode == 2 and "already holds a run (summary.json)" in result.stderr
    assert "--overwrite" in result.stderr and not survivors


def test_overwrite_replaces_the_previous_run_and_keeps_other_files(tmp_path, no_leaks):
    out = tmp_path / "run"
    first = ["--steps", "4096", "--seed", "1", "--eval-every", "1", "--eval-episodes", "2"]
    result, survivors = run_train(first, tmp_path)
    assert result.returncode == 0 and not survivors, result.stderr[-2000:]
    assert (out / "checkpoint_best.pt").exists() and list(out.glob("events.out.tfevents.*"))
    (out / "notes.txt").write_text("mine")

    result, survivors = run_train(["--steps", "2048", "--seed", "2", "--eval-episodes", "2"], tmp_path)
    assert result.returncode == 2 and "already holds a run" in result.stderr and not survivors
    result, survivors = run_train(["--steps", "2048", "--seed", "2", "--eval-episodes", "2", "--overwrite"], tmp_path)
    assert result.returncode == 0 and not survivors, result.stderr[-2000:]

    assert json.loads((out / "config.json").read_text())["seed"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["update"] for line in lines] == [1], "only the new run's updates are logged"
    assert json.loads((out / "summary.json").read_text())["env_steps"] == 2048
    best = torch.load(out / "checkpoint_best.pt", weights_only=True)
    assert best["config"]["seed"] == 2, "the old run's best policy must not pose as the new one's"
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert (out / "notes.txt").read_text() == "mine", "files prl did not write are left alone"


def test_runs_started_together_get_folders_of_their_own():
    import os

    from prl.run.cli import parse_config

    folders = {parse_config(["--env", "CartPole-v1", "--seed", "3"]).out for _ in range(50)}
    assert len(folders) == 50
    assert all(f.startswith("runs/CartPole-v1-seed3-") and f.endswith(f"-{os.getpid()}") for f in folders)
