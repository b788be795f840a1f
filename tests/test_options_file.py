"""Options files (`prl.run.options_file`, `train.py --config FILE`): every option from YAML or JSON, checked, flags winning."""

import json

import pytest
from conftest import run_script
from test_cli import TRAIN

from prl.config import Config
from prl.envs.presets import PRESETS
from prl.errors import ConfigError
from prl.run.cli import parse_config
from prl.run.options_file import read_options, write_options


def test_a_yaml_file_sets_options_over_the_preset_and_flags_win(tmp_path):
    path = tmp_path / "options.yaml"
    path.write_text("env: Pendulum-v1\nlr: 3e-4\nworkers: 3\nhidden_sizes: [32, 32]\nnorm_adv: false\n")
    config = parse_config(["--config", str(path), "--workers", "2", "--out", str(tmp_path / "run")])
    assert config.env == "Pendulum-v1" and config.workers == 2, "an explicit flag wins over the file"
    assert config.ppo.lr == 3e-4, "YAML reads 3e-4 as a string; it is read as the number it spells"
    assert config.policy.hidden_sizes == (32, 32) and config.ppo.norm_adv is False
    preset = PRESETS["Pendulum-v1"]
    assert config.ppo.gamma == preset["gamma"], "what the file leaves out comes from the env's tuned defaults"


def test_a_runs_config_json_starts_a_run_with_its_options(tmp_path):
    original = Config(env="Acrobot-v1", workers=3, envs_per_worker=2, rollout_steps=64, steps=4096).replace(lr=1e-3)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(original.to_dict()))  # nested in sections, as a run folder writes it
    config = parse_config(["--config", str(path), "--out", str(tmp_path / "new")])
    assert config.replace(out=original.out) == original


def test_written_options_read_back_equal(tmp_path):
    options = {"env": "CartPole-v1", "lr": 2.5e-4, "hidden_sizes": (64, 64), "clip_coef": 0.3, "mode": "async"}
    for name in ("best.yaml", "best.json"):
        assert read_options(write_options(tmp_path / name, options)) == options


@pytest.mark.parametrize(
    "text, message",
    [
        ("wrokers: 2\n", "unknown option 'wrokers'; did you mean 'workers'?"),
        ("workers: two\n", "option 'workers' must be an integer, got 'two'"),
        ("lr: fast\n", "option 'lr' must be a number, got 'fast'"),
        ("norm_adv: 1\n", "option 'norm_adv' must be true or false, got 1"),
        ("hidden_sizes: 64\n", "option 'hidden_sizes' must be a list, got 64"),
        ("ppo: 3\n", "section 'ppo' must be a mapping"),
        ("- workers\n", "must hold a mapping of option names to values, not a list"),
        ("workers: [1\n", "is not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_in_one_sentence_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "options.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="options file .*options.yaml") as caught:
        read_options(path)
    assert message in str(caught.value)


def test_a_file_of_another_kind_or_missing_is_refused(tmp_path):
    (tmp_path / "options.toml").write_text("workers = 2\n")
    with pytest.raises(ConfigError, match=r"must end in \.yaml, \.yml or \.json"):
        read_options(tmp_path / "options.toml")
    with pytest.raises(ConfigError, match="cannot read options file .*absent.json"):
        read_options(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{workers: 2}")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_options(tmp_path / "broken.json")


def test_train_py_refuses_a_bad_options_file_with_exit_2_and_starts_nothing(tmp_path, no_leaks):
    path = tmp_path / "options.yaml"
    path.write_text("envs_per_wroker: 4\n")
    result, survivors = run_script(
        [TRAIN, "--config", path, "--out", tmp_path / "run", "--no-progress"], cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2 and not survivors
    assert "unknown option 'envs_per_wroker'; did you mean 'envs_per_worker'?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "run").exists()
