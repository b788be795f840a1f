"""Checkpoints: everything needed to continue a run, written atomically and loaded without running code.

A checkpoint is a dict of tensors and plain values: the learner's state (policy, optimizer,
statistics, counters, sampler RNG), the episode window, torch's global RNG state, the best
evaluation return so far, and the config. `torch.load(weights_only=True)` reads it, so a
checkpoint file cannot execute code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from prl.errors import ConfigError
from prl.run.folder import write_atomically

CHECKPOINT = "checkpoint.pt"
"""The latest checkpoint in a run folder."""

BEST_CHECKPOINT = "checkpoint_best.pt"
"""The checkpoint with the best periodic evaluation return in a run folder."""

PathLike = Union[str, Path]


def save_checkpoint(path: PathLike, payload: dict) -> None:
    """Write `payload` to `path` atomically: a crash mid-write leaves the previous checkpoint intact."""
    write_atomically(path, lambda tmp: torch.save(payload, tmp))


def checkpoint_path(path: PathLike) -> Path:
    """The checkpoint file a user means: `path` itself, or the checkpoint.pt of a run folder."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_checkpoint(path: PathLike) -> dict:
    """Read a checkpoint (a file or a run folder) without allowing it to run code; ConfigError if unusable."""
    file = checkpoint_path(path)
    if not file.exists():
        raise ConfigError(f"no checkpoint at {file}; pass a run folder written with --out, or a checkpoint file.")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(
            f"the checkpoint {file} cannot be read ({type(error).__name__}); it is corrupt or not a prl checkpoint."
        ) from error
    if not isinstance(payload, dict) or "learner" not in payload or "config" not in payload:
        raise ConfigError(f"{file} is not a prl checkpoint (it lacks the learner state or the config).")
    return payload


def load_policy(path: PathLike, env=None):
    """The policy stored in a checkpoint, on the CPU, with the Config it was trained with.

    `env` replaces the stored env (needed when the run used a callable, which a checkpoint
    stores by name only). Returns (policy, config).
    """
    from prl.config import flatten_dict, from_flat
    from prl.envs.factory import probe_env
    from prl.nn.policy import build_policy

    payload = load_checkpoint(path)
    flat = flatten_dict(payload["config"])
    if env is not None:
        flat["env"] = env
    config = from_flat(flat)
    spec = probe_env(config)
    policy = build_policy(spec, config.policy, config.ppo.normalize_obs, config.ppo.obs_clip)
    try:
        policy.load_state_dict(payload["learner"]["policy"])
    except RuntimeError as error:
        raise ConfigError(
            f"the checkpoint's network does not fit {config.env_name}'s spaces: {str(error).splitlines()[0]}"
        ) from error
    return policy.eval(), config
