"""Whatever stops a run after its first update saves it and names the command that resumes it:
an error in evaluation, CUDA out of memory, a full disk, a closed terminal (SIGHUP)."""

import copy
import errno
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import assert_same_tensors
from test_checkpoint import fill_disk_after, small_config, stop_after

from prl import Learner, RunFailed, train
from prl.run import cli, training
from prl.run.checkpoint import load_checkpoint
from prl.run.training import StopRequested

BATCH = 2 * 4 * 16


class FillingFile:
    """A text file that takes `lines` writes, then fails every write, and its close, as on a full disk."""

    def __init__(self, file, lines: int):
        self.file, self.lines, self.failed = file, lines, False

    def write(self, text: str) -> int:
        self.lines -= 1
        if self.lines < 0:
            self.failed = True
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(text)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        if self.failed:  # what a buffered file does when the line it could not write is flushed again
            self.failed = False  # and once closed, it is closed
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


SMALL = [
    "--workers",
    "2",
    "--envs-per-worker",
    "4",
    "--rollout-steps",
    "16",
    "--minibatch-size",
    "64",
    "--eval-episodes",
    "0",
]


def resume_command(out) -> str:
    return f"continue with: python scripts/train.py --resume {out}"


def test_an_env_failing_in_evaluation_saves_the_run(tmp_path, monkeypatch, no_leaks):
    out = tmp_path / "run"

    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("the evaluation env fell over")

    monkeypatch.setattr(training, "evaluate", failing_evaluation)
    with pytest.raises(RunFailed) as failed:
        train(small_config(out, 4, eval_every=3, save_every=0))
    assert str(failed.value).startswith("RuntimeError: the evaluation env fell over. The run is saved at 384 env steps")
    assert resume_command(out) in str(failed.value)
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert load_checkpoint(out)["learner"]["updates"] == 3


def test_the_command_line_shows_what_failed_and_the_sentence_that_resumes(tmp_path, monkeypatch, capsys, no_leaks):
    def failing_evaluation(*args, **kwargs):
        raise RuntimeError("the evaluation env fell over")

    monkeypatch.setattr(training, "evaluate", failing_evaluation)
    out = tmp_path / "run"
    code = cli.main(
        [
            "--out",
            str(out),
            "--steps",
            str(2 * BATCH),
            "--no-progress",
            *SMALL,
            "--eval-every",
            "1",
            "--eval-episodes",
            "2",
        ]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert lines[0] == "Traceback (most recent call last):" and "failing_evaluation" in "".join(lines)
    assert lines[-1].startswith(
        "train.py: the run failed: RuntimeError: the evaluation env fell over. The run is saved"
    )
    assert lines[-1].endswith(resume_command(out))


def test_out_of_memory_in_an_update_saves_the_run_as_it_was_before_that_update(tmp_path, monkeypatch, no_leaks):
    real_loss = Learner._minibatch_loss
    calls = {"third update": 0}
    before_third = {}

    def loss_until_memory_runs_out(self, minibatch, *args):
        if self.updates == 2:
            if not calls["third update"]:
                before_third.update(copy.deepcopy(self.state_dict()))
            calls["third update"] += 1
            if calls["third update"] > 3:  # three minibatch steps into the third update
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(self, minibatch, *args)

    monkeypatch.setattr(Learner, "_minibatch_loss", loss_until_memory_runs_out)
    out = tmp_path / "run"
    with pytest.raises(RunFailed, match=r"OutOfMemoryError: CUDA out of memory.*saved at 256 env steps"):
        train(small_config(out, 4, eval_episodes=0, save_every=0))
    saved = load_checkpoint(out)["learner"]
    assert saved["updates"] == 2
    assert_same_tensors(
        saved["policy"], before_third["policy"], "weights as after the second update, none of the third"
    )
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(saved["optimizer"][key], before_third["optimizer"][key]), f"Adam {key}"


def test_a_full_disk_ends_in_one_sentence_with_exit_2_and_the_last_good_checkpoint_intact(
    tmp_path, monkeypatch, capsys, no_leaks
):
    out = tmp_path / "run"
    fill_disk_after(monkeypatch, 3)  # config.json and two checkpoints; the third checkpoint finds the disk full
    code = cli.main(["--out", str(out), "--steps", str(4 * BATCH), "--save-every", "1", "--no-progress"] + SMALL)
    stderr = capsys.readouterr().err.strip()
    assert code == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert "is full (No space left on device) while writing checkpoint.pt; free some space on it." in stderr
    assert "The run's last good checkpoint is kept; once the cause is fixed" in stderr and resume_command(out) in stderr
    assert load_checkpoint(out)["learner"]["updates"] == 2
    assert not [path.name for path in Path(out).iterdir() if path.name.endswith(".tmp")]


def test_a_closed_terminal_saves_the_run_between_updates(tmp_path, no_leaks):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGHUP)
    watcher = stop_after(out, 2, signal.SIGHUP)
    with pytest.raises(StopRequested, match="SIGHUP at"):
        train(small_config(out, 50))
    watcher.join()
    assert load_checkpoint(out)["learner"]["updates"] >= 2
    assert signal.getsignal(signal.SIGHUP) == before, "the handler is put back"


def test_a_disk_that_fills_while_logging_ends_in_one_sentence_with_the_run_saved(
    tmp_path, monkeypatch, capsys, no_leaks
):
    from prl.run import logs

    real_open = open
    monkeypatch.setattr(logs, "open", lambda *args, **kwargs: FillingFile(real_open(*args, **kwargs), 2), raising=False)
    out = tmp_path / "run"
    code = cli.main(["--out", str(out), "--steps", str(4 * BATCH), "--no-progress", *SMALL])
    stderr = capsys.readouterr().err.strip()
    assert code == 2 and len(stderr.splitlines()) == 1, stderr
    assert "is full (No space left on device) while writing metrics.jsonl; free some space on it." in stderr
    assert "The run is saved at 384 env steps" in stderr and resume_command(out) in stderr
    assert load_checkpoint(out)["learner"]["updates"] == 3
