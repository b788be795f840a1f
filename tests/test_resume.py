"""Resume: into its own folder or a new one, never rewinding or mixing runs, the same run each time,
and nothing imported or joined that the user did not name."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
from test_checkpoint import BATCH
from test_checkpoint import small_config as checkpoint_config

from prl import ConfigError, train
from prl.run.checkpoint import BEST_CHECKPOINT, load_checkpoint, load_policy, save_checkpoint
from prl.run.cli import main, parse_args

TIMING = ("steps_per_s",)


def small_config(out, updates, **options):
    """test_checkpoint's small CartPole run, with a checkpoint every 2 updates."""
    return checkpoint_config(out, updates, **{"seed": 3, "save_every": 2, **options})


def folder_digest(folder: Path) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def metrics(folder: Path) -> list[dict]:
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [
        {key: value for key, value in line.items() if not key.endswith("_s") and key not in TIMING} for line in lines
    ]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A finished two-update run with a checkpoint and a best checkpoint."""
    folder = tmp_path_factory.mktemp("source")
    train(small_config(folder, 2))
    return folder


def test_resuming_into_a_new_folder_branches_the_run_and_leaves_the_source_as_it_was(source, tmp_path, no_leaks):
    before = folder_digest(source)
    branch = tmp_path / "branch"
    summary = train(small_config(branch, 4), resume_from=str(source))
    assert folder_digest(source) == before, "the source folder is only read"
    assert summary["env_steps"] == 4 * BATCH
    assert [line["update"] for line in metrics(branch)] == [1, 2, 3, 4]
    assert metrics(branch)[:2] == metrics(source), "the branch's history up to the checkpoint is the source's"
    assert load_checkpoint(branch / BEST_CHECKPOINT)["learner"]["updates"] == 4, "its own best"


def test_resuming_one_checkpoint_twice_gives_the_same_run(source, tmp_path, no_leaks):
    train(small_config(tmp_path / "first", 4), resume_from=str(source))
    train(small_config(tmp_path / "second", 4), resume_from=str(source))
    assert metrics(tmp_path / "first") == metrics(tmp_path / "second")


def test_a_branch_into_a_folder_holding_a_run_needs_overwrite(source, tmp_path, no_leaks):
    other = tmp_path / "other"
    train(small_config(other, 1, eval_episodes=0))
    before = folder_digest(other)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(small_config(other, 4), resume_from=str(source))
    assert folder_digest(other) == before
    train(small_config(other, 4, overwrite=True), resume_from=str(source))
    assert [line["update"] for line in metrics(other)] == [1, 2, 3, 4]
    assert metrics(other)[:2] == metrics(source), "nothing of the replaced run is left in its history"


def test_resuming_an_older_checkpoint_into_its_own_folder_is_refused(source, capsys):
    before = folder_digest(source)
    assert main(["--resume", str(source / BEST_CHECKPOINT)]) == 2
    assert "would rewind the run that wrote it, losing its later checkpoints" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="would rewind the run that wrote it"):
        train(small_config(source, 4), resume_from=str(source / BEST_CHECKPOINT))
    assert folder_digest(source) == before


CODE_OPTIONS = {"env": "marker_module:CartPole-v1", "encoder": "marker_module:encoder", "backend": "ray"}


@pytest.fixture
def crafted(source, tmp_path, monkeypatch):
    """A copy of the source run whose checkpoint names a module to import and a cluster to join."""
    (tmp_path / "marker_module.py").write_text("raise SystemExit('a checkpoint made this module run')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    payload = load_checkpoint(source)
    payload["config"]["env"] = CODE_OPTIONS["env"]
    payload["config"]["policy"]["encoder"] = CODE_OPTIONS["encoder"]
    payload["config"].update(backend="ray", ray_address="10.9.8.7:6379")
    folder = tmp_path / "crafted"
    folder.mkdir()
    save_checkpoint(folder / "checkpoint.pt", payload)
    return folder


def test_a_checkpoint_naming_code_or_a_cluster_is_not_acted_on_without_the_users_say(crafted):
    with pytest.raises(ConfigError, match="names code to import or a cluster to join") as refused:
        parse_args(["--resume", str(crafted)])
    message = str(refused.value)
    for value in (*CODE_OPTIONS.values(), "10.9.8.7:6379", "--trust-checkpoint"):
        assert value in message
    with pytest.raises(ConfigError, match=r"names code to import.*\(env='marker_module:CartPole-v1'"):
        load_policy(crafted)
    assert "marker_module" not in sys.modules

    named = ["--env", CODE_OPTIONS["env"], "--encoder", CODE_OPTIONS["encoder"], "--backend", "ray"]
    config, _ = parse_args(["--resume", str(crafted), *named, "--ray-address", "auto"])
    assert (config.env, config.ray_address) == (CODE_OPTIONS["env"], "auto"), "what the user gave is used"
    config, _ = parse_args(["--resume", str(crafted), "--trust-checkpoint"])
    assert config.ray_address == "10.9.8.7:6379"
    with pytest.raises(ConfigError, match="names code to import"):
        parse_args(["--resume", str(crafted), "--env", "CartPole-v1"])  # the encoder is still the file's


def test_evaluate_script_refuses_a_checkpoint_naming_code_unless_told(crafted, capsys):
    from test_evaluate_script import evaluate_script

    assert evaluate_script.main([str(crafted), "--episodes", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--trust-checkpoint" in error and "marker_module" not in sys.modules
    with pytest.raises(SystemExit, match="a checkpoint made this module run"):
        evaluate_script.main([str(crafted), "--episodes", "1", "--trust-checkpoint"])  # told: it imports


def test_trust_checkpoint_without_resume_is_refused():
    with pytest.raises(ConfigError, match="pass it with --resume"):
        parse_args(["--trust-checkpoint"])
