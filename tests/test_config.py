"""Config validation, the flat view of the tree, presets, and the generated command line."""

import dataclasses
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
import toy_envs

from prl import Config, ConfigError, PPOConfig, tuned_config
from prl.config import flat_fields, from_flat, to_flat
from prl.envs.factory import probe_env
from prl.envs.observations import ObsLayout
from prl.run.cli import build_parser, field_docs, parse_config


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(workers=0), "workers must be between 1 and"),
        (dict(workers=10_000), "workers must be between 1 and"),
        (dict(envs_per_worker=0), "envs_per_worker must be at least 1"),
        (dict(lr=-1.0), "lr must be a positive number"),
        (dict(gamma=1.5), r"gamma must lie in \[0, 1\]"),
        (dict(clip_coef=0.0), r"clip_coef must lie in \(0, 1\)"),
        (dict(minibatch_size=4096), r"minibatch_size \(4096\) is larger than the batch of 2048"),
        (dict(steps=100), r"steps \(100\) is smaller than one batch of 2048"),
        (dict(device="tpu"), "device must be auto, cpu, cuda"),
        (dict(activation="gelu"), "activation must be tanh or relu"),
        (dict(hidden_sizes=(64, 0)), "hidden_sizes must be positive widths"),
        (dict(speed=3), r"unknown option .speed.; did you mean"),
        (dict(seed=-1), "seed must be a non-negative integer"),
        (dict(worker_timeout=float("inf")), "worker_timeout must be a positive number of seconds"),
        (dict(device="cuda:x"), "device must be auto, cpu, cuda or cuda:N"),
        (dict(vf_coef=float("inf")), "vf_coef must be a finite number, got inf"),
        (dict(ent_coef=float("nan")), "ent_coef must be a finite number, got nan"),
        (dict(obs_clip=float("inf")), "obs_clip must be a finite number, got inf"),
        (dict(reward_clip=float("inf")), "reward_clip must be a finite number, got inf"),
        (dict(log_std_init=float("-inf")), "log_std_init must be a finite number, got -inf"),
        (dict(restart_window_s=float("inf")), "restart_window_s must be a finite number, got inf"),
        (dict(seed=2**70), "seed must be a non-negative integer below 2\\*\\*64"),
        (dict(mode="eager"), "mode must be sync, overlap or async"),
        (dict(batch_rollouts=2), "batch_rollouts sizes the batches of --mode async"),
        (
            dict(mode="async", batch_rollouts=5),
            r"batch_rollouts must lie between 1 and workers x slots_per_worker \(4\)",
        ),
        (dict(mode="async", slots_per_worker=0), "slots_per_worker must be at least 1"),
        (dict(correction="retrace"), "correction must be auto, none, clip or vtrace"),
        (dict(rho_bar=0.0), "rho_bar and c_bar must be positive"),
        (dict(max_policy_lag=-1), "max_policy_lag must be non-negative or unset"),
    ],
)
def test_bad_values_fail_with_one_sentence(options, message):
    with pytest.raises(ConfigError, match=message) as caught:
        from_flat(options)
    text = str(caught.value)
    assert text.endswith(".") or text.endswith("?"), text
    assert "\n" not in text


def test_config_is_frozen_and_replace_reaches_nested_fields():
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.workers = 4
    changed = config.replace(lr=1e-3, workers=4)
    assert changed.ppo.lr == 1e-3 and changed.workers == 4
    assert config.ppo.lr == PPOConfig().lr
    assert from_flat(to_flat(changed)) == changed


def test_async_batches_and_slots_and_the_correction_each_mode_means():
    config = Config(workers=4, envs_per_worker=8, rollout_steps=16, mode="async", batch_rollouts=2, slots_per_worker=3)
    assert (config.rollouts_per_batch, config.num_slots, config.batch_envs, config.batch_size) == (2, 12, 16, 256)
    assert config.lag_correction == "vtrace" and Config().lag_correction == "none"
    assert Config(workers=4, envs_per_worker=8).num_slots == 4, "one slot per worker outside async mode"
    assert config.replace(correction="clip").lag_correction == "clip"


def test_a_checkpoint_written_before_mode_replaced_overlap_is_read_with_its_mode():
    from prl.config import flatten_dict

    assert flatten_dict({"overlap": True, "ppo": {}, "policy": {}})["mode"] == "overlap"
    assert flatten_dict({"overlap": False, "ppo": {}, "policy": {}})["mode"] == "sync"
    assert "overlap" not in flatten_dict({"overlap": True, "ppo": {}, "policy": {}})


def test_batch_size_and_updates():
    config = Config(workers=2, envs_per_worker=16, rollout_steps=32, steps=100_000)
    assert config.batch_size == 1024 and config.num_envs == 32 and config.num_updates == 98


def test_cartpole_preset_keeps_its_batch_whatever_the_worker_layout():
    assert tuned_config("CartPole-v1").batch_size == 2048
    assert tuned_config("CartPole-v1", workers=8, envs_per_worker=4).rollout_steps == 64
    assert tuned_config("CartPole-v1", workers=8, envs_per_worker=4, rollout_steps=8).batch_size == 256
    with pytest.raises(ConfigError, match="workers must be between 1 and"):
        tuned_config("CartPole-v1", workers=0)


def test_tuned_defaults_load_and_options_override_them():
    pendulum = tuned_config("Pendulum-v1")
    assert pendulum.ppo.gamma == 0.9 and pendulum.rollout_steps == 256
    assert tuned_config("Pendulum-v1", gamma=0.95).ppo.gamma == 0.95
    assert tuned_config("Swimmer-v5") == Config(env="Swimmer-v5"), "an env without a preset gets the defaults"


def test_every_option_has_a_flag_with_its_docstring_as_help():
    parser = build_parser()
    flags = {action.dest: action for action in parser._actions}
    for name in flat_fields():
        assert name in flags, name
        assert flags[name].help and not flags[name].help.startswith(" ("), f"--{name} has no help text"
    assert "Environments stepped together by each worker" in flags["envs_per_worker"].help
    assert field_docs(PPOConfig)["gae_lambda"] == "Lambda of generalized advantage estimation."


def test_command_line_builds_the_config():
    config = parse_config(
        [
            "--env",
            "Pendulum-v1",
            "--workers",
            "3",
            "--envs-per-worker",
            "4",
            "--lr",
            "3e-4",
            "--hidden-sizes",
            "32",
            "32",
            "--no-anneal-lr",
            "--target-kl",
            "0.02",
            "--env-kwargs",
            '{"g": 9.0}',
            "--out",
            "somewhere",
        ]
    )
    assert config.env == "Pendulum-v1" and config.workers == 3 and config.envs_per_worker == 4
    assert config.ppo.lr == 3e-4 and config.ppo.anneal_lr is False and config.ppo.target_kl == 0.02
    assert config.policy.hidden_sizes == (32, 32)
    assert config.env_kwargs == {"g": 9.0} and config.out == "somewhere"
    assert config.ppo.gamma == 0.9, "the Pendulum preset must still apply under the flags"
    assert parse_config(["--target-kl", "none"]).ppo.target_kl is None


def test_public_names_resolve_and_the_cli_does_not_import_torch():

    import prl

    for name in prl.__all__:
        assert getattr(prl, name).__doc__, f"prl.{name} has no docstring"
    code = "import sys, prl.run.cli; prl.run.cli.parse_config(['--workers', '3']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_no_preset_starts_from_the_defaults_and_flags_still_apply():
    from prl.run.cli import parse_config

    config = parse_config(["--env", "Pendulum-v1", "--no-preset", "--lr", "1e-3", "--out", "x"])
    assert config == Config(env="Pendulum-v1", out="x").replace(lr=1e-3)
    assert parse_config(["--env", "Pendulum-v1", "--out", "x"]).ppo.gamma == 0.9


def test_unset_normalization_follows_the_spaces():
    import gymnasium as gym
    import numpy as np

    from prl.envs.presets import normalizes_observations, normalizes_rewards
    from prl.envs.spec import spec_from_spaces

    def spec(low, high, action=None):
        action = action or gym.spaces.Discrete(2)
        return spec_from_spaces("toy", gym.spaces.Box(np.float32(low), np.float32(high)), action)

    unit = spec([-1.0, -8.0], [1.0, 8.0])
    assert not normalizes_observations(None, unit), "bounded on a unit-like scale: left as is"
    assert normalizes_observations(None, spec([-1.0, -np.inf], [1.0, np.inf])), "unbounded"
    assert normalizes_observations(None, spec([-1.2, -0.07], [0.6, 0.07])), "MountainCar's tiny velocity"
    assert normalizes_observations(None, spec([-100.0], [100.0])), "wide bounds"
    assert normalizes_observations(True, unit) and not normalizes_observations(False, spec([-1.0], [np.inf]))
    box = gym.spaces.Box(-1.0, 1.0, (2,))
    assert normalizes_rewards(None, spec([-1.0], [1.0], box)) and not normalizes_rewards(None, unit)
    assert not normalizes_rewards(False, spec([-1.0], [1.0], box))


def test_auto_device_is_cuda_for_pixels_where_there_is_a_gpu_and_concrete_devices_carry_their_index(monkeypatch):
    from prl.config import concrete_device, resolve_device
    from prl.nn.encoders import reads_pixels

    assert resolve_device(Config(device="auto"), pixels=False) == "cpu"
    assert resolve_device(Config(device="auto"), pixels=True) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(Config(device="cpu"), pixels=True) == "cpu"
    assert resolve_device(Config(device="cuda:1"), pixels=False) == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(Config(device="auto"), pixels=True) == "cuda", "a CNN on pixels learns on the GPU"
    assert resolve_device(Config(device="auto"), pixels=False) == "cpu", "an MLP learns faster on the CPU"
    monkeypatch.undo()
    layout = probe_env(Config(env=toy_envs.CueImageEnv)).obs_layout
    assert layout.has_images and not reads_pixels(layout), "a 7x7 grid is no picture"
    big = ObsLayout.from_space(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8))
    assert reads_pixels(big) and not reads_pixels(probe_env(Config()).obs_layout)
    assert concrete_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert concrete_device("cuda") == torch.device("cuda", torch.cuda.current_device())
        assert concrete_device("cuda") == torch.zeros(1, device="cuda").device


def test_prl_evaluate_stays_the_function_after_training_imports_its_module():
    code = "import prl, prl.run.training; print(callable(prl.evaluate) and prl.evaluate.__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "evaluate", result.stderr
