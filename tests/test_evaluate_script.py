"""scripts/evaluate.py evaluates a run's checkpoint, records a video, and refuses bad input with one sentence."""

import importlib.util
import json
from pathlib import Path

import pytest

EVALUATE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evaluate.py"
STAT_KEYS = {"return_mean", "return_std", "return_min", "return_max", "length_mean", "length_std", "length_min"}


def import_evaluate_script():
    """scripts/evaluate.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("prl_evaluate_script", EVALUATE_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_script = import_evaluate_script()


def video_support_missing() -> bool:
    """True when imageio, its ffmpeg backend or CartPole's renderer (pygame) is not installed."""
    return any(importlib.util.find_spec(name) is None for name in ("imageio", "imageio_ffmpeg", "pygame"))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A real, tiny CartPole run (128 env steps, about 2 s), trained once for this module."""
    from prl import train, tuned_config

    folder = tmp_path_factory.mktemp("evaluate") / "run"
    config = tuned_config(
        "CartPole-v1",
        workers=1,
        envs_per_worker=4,
        rollout_steps=16,
        minibatch_size=64,
        steps=128,
        progress=False,
        eval_episodes=0,
        out=str(folder),
    )
    train(config)
    return folder


def run_json(capsys, *args) -> dict:
    """main(ARGS --json) must succeed; its stdout parsed as one JSON object."""
    assert evaluate_script.main([*map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def error_line(capsys, *args) -> str:
    """main(ARGS) must fail with exit code 2 and one line on stderr; that line."""
    assert evaluate_script.main(list(map(str, args))) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out, captured.err
    return lines[0]


def test_run_folder_evaluates_deterministically_with_statistics(run_folder, capsys):
    report = run_json(capsys, run_folder, "--episodes", "3")
    assert STAT_KEYS <= report.keys()
    assert report["env"] == "CartPole-v1" and report["deterministic"] is True
    assert report["checkpoint"].endswith("checkpoint.pt")
    assert len(report["returns"]) == len(report["lengths"]) == 3
    assert report["return_min"] <= report["return_mean"] <= report["return_max"]
    assert report["return_mean"] == pytest.approx(sum(report["returns"]) / 3)
    assert report == run_json(capsys, run_folder, "--episodes", "3")  # the run's seed makes it repeatable


def test_checkpoint_file_and_text_output(run_folder, capsys):
    assert evaluate_script.main([str(run_folder / "checkpoint.pt"), "--episodes", "2", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1, 2 episodes, deterministic policy, seed 5" in out
    assert "return " in out and "length " in out


def test_stochastic_policy(run_folder, capsys):
    report = run_json(capsys, run_folder, "--episodes", "3", "--stochastic")
    assert report["deterministic"] is False and len(report["returns"]) == 3


def test_missing_folder_is_one_sentence(tmp_path, capsys):
    assert "no checkpoint at" in error_line(capsys, tmp_path / "nothing-here")


def test_corrupt_checkpoint_is_one_sentence(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert "is corrupt or not a prl checkpoint" in error_line(capsys, tmp_path)


def test_bad_episodes_and_missing_best_are_one_sentence(run_folder, capsys):
    assert "--episodes must be at least 1, got 0." in error_line(capsys, run_folder, "--episodes", "0")
    assert "has no checkpoint_best.pt" in error_line(capsys, run_folder, "--best")


def test_video_is_an_mp4_or_names_the_missing_package(run_folder, tmp_path, capsys):
    video = tmp_path / "episode.mp4"
    args = [run_folder, "--episodes", "1", "--video", video, "--video-episodes", "2"]
    if video_support_missing():
        assert "pip install" in error_line(capsys, *args)
        assert not video.exists()
        return
    report = run_json(capsys, *args)
    assert report["video_frames"] > 2  # two episodes: each reset frame and at least one step
    assert video.stat().st_size > 0 and video.read_bytes()[4:8] == b"ftyp"


def test_best_evaluates_the_best_checkpoint_of_a_real_run(tmp_path, capsys):
    from prl import train, tuned_config
    from prl.run.checkpoint import load_checkpoint

    folder = tmp_path / "run"
    config = tuned_config(
        "CartPole-v1",
        workers=1,
        envs_per_worker=4,
        rollout_steps=64,
        steps=768,
        progress=False,
        eval_every=1,
        eval_episodes=20,
        out=str(folder),
    )
    train(config)
    logged = [json.loads(line)["eval_return_mean"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    best = load_checkpoint(folder / "checkpoint_best.pt")
    assert best["best_eval_return"] >= max(logged)
    report = run_json(capsys, folder, "--best")
    assert report["checkpoint"].endswith("checkpoint_best.pt")
    # The run's own evaluation and the script use the same seeds and episodes: the same return.
    assert report["return_mean"] == best["best_eval_return"]
    assert report["episodes"] == 20 and STAT_KEYS <= set(report)


def test_a_pettingzoo_run_is_evaluated_per_agent_and_per_team_and_filmed_with_every_agent(tmp_path, capsys):
    from prl import train
    from prl.config import from_flat

    folder = tmp_path / "spread"
    options = dict(env="pettingzoo:mpe2.simple_spread_v3", workers=1, envs_per_worker=6, rollout_steps=25, steps=150)
    train(from_flat({**options, "progress": False, "tensorboard": False, "eval_episodes": 0, "out": str(folder)}))
    video = tmp_path / "spread.mp4"
    # A PettingZoo id imports the module it names, so a checkpoint's is acted on only when given again.
    args = [folder, "--env", options["env"], "--episodes", "2", "--video", video, "--video-episodes", "1"]
    report = run_json(capsys, *args)
    assert len(report["returns"]) == 6 and len(report["team_returns"]) == 2, "3 agents in each of 2 episodes"
    assert report["team_return_mean"] == pytest.approx(3 * report["return_mean"])
    assert report["video_frames"] == 26, "the reset frame and 25 steps of every agent"
    assert video.read_bytes()[4:8] == b"ftyp"
