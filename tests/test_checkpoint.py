"""Checkpoints and resume: same counters and statistics as not stopping, safe writes, Ctrl-C, clear errors."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors, run_script, session_processes

from prl import ConfigError, train, tuned_config
from prl.run.checkpoint import BEST_CHECKPOINT, load_checkpoint, load_policy, save_checkpoint
from prl.run.training import StopRequested

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"
BATCH = 2 * 4 * 16


def small_config(out, updates, **options):
    values = dict(
        workers=2,
        envs_per_worker=4,
        rollout_steps=16,
        minibatch_size=64,
        steps=updates * BATCH,
        seed=5,
        normalize_obs=True,
        normalize_reward=True,
        progress=False,
        eval_episodes=2,
        out=str(out),
        save_every=0,
    )
    return tuned_config("CartPole-v1", **{**values, **options})


def learner_state(folder):
    return load_checkpoint(folder)["learner"]


def stop_after(folder, updates, signum=signal.SIGTERM):
    """From a thread: send this process `signum` once the run in `folder` has logged `updates` updates."""

    def watch():
        metrics = Path(folder) / "metrics.jsonl"
        while not metrics.exists() or len(metrics.read_text().splitlines()) < updates:
            time.sleep(0.005)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_resuming_gives_the_same_counters_and_statistics_as_not_stopping(tmp_path, first_updates, no_leaks):
    whole = tmp_path / "whole"
    train(small_config(whole, 12))
    split = tmp_path / "split"
    watcher = stop_after(split, 3)
    with pytest.raises(StopRequested, match="SIGTERM at"):
        train(small_config(split, 12))
    watcher.join()
    saved = learner_state(split)
    stopped_at = saved["updates"]
    assert 3 <= stopped_at < 12
    train(small_config(split, 12), resume_from=str(split))

    # The resumed run's first update starts from exactly what was saved at the stop.
    assert len(first_updates) == 3, "one learner each: the whole run, the stopped run, the resumed run"
    start = first_updates[-1][1]
    assert (start["updates"], start["env_steps"]) == (stopped_at, stopped_at * BATCH)
    assert_same_tensors(start["policy"], saved["policy"], "policy weights and observation statistics")
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(start["optimizer"][key].cpu(), saved["optimizer"][key].cpu()), f"Adam {key}"
    assert start["optimizer"]["steps"] == saved["optimizer"]["steps"] > 0
    assert_same_tensors(
        {k: v for k, v in start["reward_scaler"].items() if k != "count"},
        {k: v for k, v in saved["reward_scaler"].items() if k != "count"},
        "reward scaler",
    )
    assert start["reward_scaler"]["count"] == saved["reward_scaler"]["count"]
    assert torch.equal(start["generator"], saved["generator"])
    for name in ("obs_normalizer.mean", "obs_normalizer.var"):
        assert not torch.equal(saved["policy"][name], torch.zeros_like(saved["policy"][name])), name

    expected, resumed = learner_state(whole), learner_state(split)
    for key in ("updates", "env_steps"):
        assert resumed[key] == expected[key] == (12 if key == "updates" else 12 * BATCH)
    assert resumed["optimizer"]["steps"] == expected["optimizer"]["steps"]
    assert float(resumed["policy"]["obs_normalizer.count"]) == float(expected["policy"]["obs_normalizer.count"])
    assert resumed["reward_scaler"]["count"] == expected["reward_scaler"]["count"]
    lines = [json.loads(line) for line in (split / "metrics.jsonl").read_text().splitlines()]
    whole_lines = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [line["update"] for line in lines] == list(range(1, 13))
    assert [line["lr"] for line in lines] == [line["lr"] for line in whole_lines], "the lr schedule must carry on"
    # Up to the stop, both folders hold the same run.
    assert [line["policy_loss"] for line in lines[:stopped_at]] == [
        line["policy_loss"] for line in whole_lines[:stopped_at]
    ]


def test_resume_refuses_options_that_make_another_run(tmp_path):
    train(small_config(tmp_path, 1, eval_episodes=0))
    with pytest.raises(ConfigError, match="was made with lr=0.003, not 0.001"):
        train(small_config(tmp_path, 2, lr=1e-3), resume_from=str(tmp_path))


def fill_disk_after(monkeypatch, writes: int) -> None:
    """Let `writes` more files be written whole, then make every write fail halfway as on a full disk."""
    real_write_bytes, real_write_text = Path.write_bytes, Path.write_text
    left = [writes]

    def write(real):
        def fails_when_full(self, data, *args, **kwargs):
            left[0] -= 1
            if left[0] >= 0:
                return real(self, data, *args, **kwargs)
            real(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return fails_when_full

    monkeypatch.setattr(Path, "write_bytes", write(real_write_bytes))
    monkeypatch.setattr(Path, "write_text", write(real_write_text))


def test_a_crash_while_writing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"learner": {"updates": 1}, "config": {}})
    fill_disk_after(monkeypatch, 0)
    with pytest.raises(ConfigError, match=r"the disk holding .* is full \(No space left on device\) while writing"):
        save_checkpoint(path, {"learner": {"updates": 2}, "config": {}})
    assert load_checkpoint(path)["learner"]["updates"] == 1


def test_unusable_checkpoints_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="is not a prl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_periodic_evaluation_is_logged_and_keeps_the_best_policy(tmp_path, no_leaks):
    train(small_config(tmp_path, 4, eval_every=2))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [("eval_return_mean" in line) for line in lines] == [False, True, False, True]
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)
    best_return = max(line["eval_return_mean"] for line in lines if "eval_return_mean" in line)
    assert best["best_eval_return"] >= best_return
    policy, config = load_policy(tmp_path / BEST_CHECKPOINT)
    assert config.env == "CartPole-v1" and policy.act(torch.zeros(1, 4)).shape == (1, 1)


def test_a_resumed_run_keeps_a_best_policy_that_came_after_its_checkpoint(tmp_path, no_leaks):
    from prl import Learner
    from prl.run.training import Run

    config = small_config(tmp_path, 4, eval_every=2, save_every=2, tensorboard=False)
    train(config)
    best = load_checkpoint(tmp_path / BEST_CHECKPOINT)["best_eval_return"]
    stale = load_checkpoint(tmp_path)  # as if the run had crashed before its last periodic checkpoint
    stale["best_eval_return"] = float("-inf")
    run = Run(config, Learner(config), stale)
    run.close()
    assert run.best_eval_return == best > float("-inf")


def test_cli_resume_errors_are_one_sentence(tmp_path):
    result, survivors = run_script([TRAIN, "--resume", tmp_path / "missing"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "no checkpoint at" in result.stderr and not survivors


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes(tmp_path, no_leaks):
    out = tmp_path / "run"
    args = [sys.executable, str(TRAIN), "--steps", "5000000", "--save-every", "0", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    assert process.poll() is None, process.communicate()[1]
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - sent < 10
    assert process.returncode == 130
    assert f"continue with: python scripts/train.py --resume {out}" in stderr
    deadline = time.monotonic() + 5
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_processes(process.pid)
    stopped_at = load_checkpoint(out)["learner"]["updates"]
    assert stopped_at >= 3

    target = (stopped_at + 2) * 2048
    result, survivors = run_script(
        [TRAIN, "--resume", out, "--steps", target, "--no-progress", "--eval-episodes", "0"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not survivors
    assert load_checkpoint(out)["learner"]["updates"] == stopped_at + 2


def test_tensorboard_event_files_hold_the_metrics(tmp_path, no_leaks):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(small_config(tmp_path, 2, eval_every=2))
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/episode_return_mean", "charts/eval_return_mean", "losses/policy_loss", "perf/steps_per_s"} <= tags
    assert [event.step for event in events.Scalars("losses/value_loss")] == [BATCH, 2 * BATCH]


def test_resuming_with_another_env_is_refused_before_anything_starts(tmp_path):
    train(small_config(tmp_path, 1, eval_episodes=0))
    result, survivors = run_script([TRAIN, "--resume", tmp_path, "--env", "Acrobot-v1"], cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and not survivors
    assert "was made with env='CartPole-v1', not 'Acrobot-v1'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_second_ctrl_c_stops_at_once_and_leaves_nothing(tmp_path, no_leaks):
    out = tmp_path / "run"
    # Updates of several seconds each, so both signals land inside one update.
    slow_updates = ["--rollout-steps", "512", "--epochs", "8", "--minibatch-size", "64", "--save-every", "0"]
    args = [sys.executable, str(TRAIN), "--steps", "5000000", "--out", str(out), "--no-progress", *slow_updates]
    process = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1]
    # Past the next collect (a fraction of a second; a stop there is taken at once), into the next update.
    time.sleep(1.0)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)  # two signals sent at once may merge into one
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - sent < 10
    # The immediate path: no checkpoint saved between updates, so no resume command is offered.
    assert "train.py: interrupted; workers stopped." in stderr
    assert "continue with" not in stderr and not (out / "checkpoint.pt").exists()
    deadline = time.monotonic() + 5
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not session_processes(process.pid)


def test_a_failed_write_leaves_no_temporary_file_and_two_writers_never_share_one(tmp_path, monkeypatch):
    from prl.run.folder import write_atomically

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"learner": {"updates": 1}, "config": {}})

    with monkeypatch.context() as patch:
        fill_disk_after(patch, 0)
        with pytest.raises(ConfigError, match="is full"):
            save_checkpoint(path, {"learner": {"updates": 2}, "config": {}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    temporary = []
    for text in ("a", "b"):
        write_atomically(
            tmp_path / "summary.json", lambda tmp, text=text: temporary.append(tmp) or tmp.write_text(text)
        )
    assert len(set(temporary)) == 2 and (tmp_path / "summary.json").read_text() == "b"


def flip_middle(path, count=64):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(byte ^ 0xFF for byte in data[middle : middle + count])
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_instead_of_loading_altered_weights(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"learner": {"weights": torch.arange(4096.0)}, "config": {}})
    flip_middle(path)
    with pytest.raises(ConfigError, match="is corrupt|cannot be read"):
        load_checkpoint(path)


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before_it_with_a_warning(tmp_path):
    path = tmp_path / "checkpoint.pt"
    for updates in (1, 2):
        save_checkpoint(path, {"learner": {"updates": updates, "weights": torch.arange(4096.0)}, "config": {}})
    assert load_checkpoint(path)["learner"]["updates"] == 2
    assert load_checkpoint(tmp_path / "checkpoint_previous.pt")["learner"]["updates"] == 1
    flip_middle(path)
    with pytest.warns(UserWarning, match="Using the checkpoint before it"):
        assert load_checkpoint(tmp_path)["learner"]["updates"] == 1
    path.unlink()  # as if a crash came between the two renames of a save
    with pytest.warns(UserWarning, match="is missing"):
        assert load_checkpoint(tmp_path)["learner"]["updates"] == 1


def test_the_options_that_error_messages_name_can_change_on_resume(tmp_path, no_leaks):
    from prl.run.training import resume_checkpoint

    config = small_config(tmp_path, 1, eval_episodes=0, tensorboard=False)
    train(config)
    advised = dict(max_worker_restarts=9, restart_window_s=60.0, nan_policy="drop", worker_timeout=300.0)
    advised |= dict(ray_address="127.0.0.1:6379", ray_worker_cpus=0.5, device="cpu")
    assert resume_checkpoint(config.replace(**advised), str(tmp_path))["learner"]["updates"] == 1
    with pytest.raises(ConfigError, match="was made with lr="):
        resume_checkpoint(config.replace(lr=1e-2), str(tmp_path))


def test_a_run_folder_in_use_by_another_run_is_refused_and_free_again_after_it(tmp_path, no_leaks):
    from prl.run.folder import locked_run_folder

    out = tmp_path / "run"
    config = small_config(out, 1, eval_episodes=0, tensorboard=False)
    with locked_run_folder(out):  # as another process's run would hold it
        with pytest.raises(ConfigError, match="is in use by another run; wait for it to end, or choose another --out"):
            train(config)
        with pytest.raises(ConfigError, match="is in use by another run"):
            train(config, resume_from=str(out))
    train(config)
    assert load_checkpoint(out)["learner"]["updates"] == 1
    with locked_run_folder(tmp_path / "never-used"):
        pass
    assert not (tmp_path / "never-used").exists()  # a folder made only for the lock is not left behind
