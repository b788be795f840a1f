"""Checkpoints: everything needed to continue a run, written atomically, checksummed, and loaded without running code.

A checkpoint is a dict of tensors and plain values: the learner's state (policy, optimizer,
statistics, counters, sampler RNG), the episode window, torch's global RNG state, the best
evaluation return so far, and the config. `torch.load(weights_only=True)` reads it, so a
checkpoint file cannot execute code.

The payload also holds `CHECKSUM`, a SHA-256 of its own contents (every tensor's bytes, dtype
and shape, every other value, in a fixed order), so that a file damaged after it was written (a
flipped bit, a torn copy) is refused instead of loading with altered weights; plain `torch.load`
still reads it. Each save keeps the file it replaces as `<name>_previous.pt`, and loading a
damaged checkpoint falls back to that one with a warning. Files written before the checksum
still load.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Iterable, Union

import torch

from prl.errors import ConfigError
from prl.run.folder import write_atomically

CHECKPOINT = "checkpoint.pt"
"""The latest checkpoint in a run folder."""

BEST_CHECKPOINT = "checkpoint_best.pt"
"""The checkpoint with the best periodic evaluation return in a run folder."""

PathLike = Union[str, Path]


CHECKSUM = "sha256"
"""The payload key that holds the SHA-256 of the rest of the payload (`content_digest`)."""


def content_digest(payload: Any) -> str:
    """SHA-256 of a payload's contents: each tensor's dtype, shape and bytes, and every other value's repr,
    walked in a fixed order (dict keys sorted), so that the same contents always give the same digest."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"tensor {value.dtype} {tuple(value.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            digest.update(f"dict {len(value)}".encode())
            for key in sorted(value, key=repr):
                digest.update(repr(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"{type(value).__name__} {len(value)}".encode())
            for item in value:
                feed(item)
        else:
            digest.update(repr(value).encode())

    feed(payload)
    return digest.hexdigest()


def previous_path(path: PathLike) -> Path:
    """Where the checkpoint that `path` replaced is kept: checkpoint.pt -> checkpoint_previous.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}_previous{path.suffix}")


def save_checkpoint(path: PathLike, payload: dict, keep_previous: bool = True) -> None:
    """Write `payload` to `path` atomically, with its checksum, and (by default) keep the file it replaces as
    `previous_path`. A crash mid-write leaves the previous checkpoint intact, under its own name."""
    stored = {**payload, CHECKSUM: content_digest(payload)}
    # Serialized in memory first: torch.save reports a full disk as a bare RuntimeError, a file write as ENOSPC.
    data = io.BytesIO()
    torch.save(stored, data)
    previous = previous_path(path) if keep_previous else None
    write_atomically(path, lambda tmp: tmp.write_bytes(data.getbuffer()), keep_previous=previous)


def checkpoint_path(path: PathLike) -> Path:
    """The checkpoint file a user means: `path` itself, or the checkpoint.pt of a run folder."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_checkpoint(path: PathLike) -> dict:
    """Read a checkpoint (a file or a run folder) without allowing it to run code; ConfigError if unusable.

    A checkpoint that is damaged, or missing after a crash between the two renames of a save,
    is replaced by the one it replaced (`previous_path`), with a warning that says so.
    """
    file = checkpoint_path(path)
    previous = previous_path(file)
    if not file.exists() and not previous.exists():
        raise ConfigError(f"no checkpoint at {file}; pass a run folder written with --out, or a checkpoint file.")
    try:
        return _read(file)
    except ConfigError as error:
        if not previous.exists():
            raise
        try:
            payload = _read(previous)
        except ConfigError:
            raise error from None
        warnings.warn(f"prl: {error} Using the checkpoint before it, {previous}, instead.", stacklevel=2)
        return payload


def _read(file: Path) -> dict:
    """One checkpoint file's payload, its checksum verified; ConfigError naming what is wrong with it."""
    if not file.exists():
        raise ConfigError(f"the checkpoint {file} is missing.")
    try:
        stored = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(
            f"the checkpoint {file} cannot be read ({type(error).__name__}); it is corrupt or not a prl checkpoint."
        ) from error
    if not isinstance(stored, dict) or "learner" not in stored or "config" not in stored:
        raise ConfigError(f"{file} is not a prl checkpoint (it lacks the learner state or the config).")
    expected = stored.pop(CHECKSUM, None)
    if expected is not None and content_digest(stored) != expected:
        raise ConfigError(f"the checkpoint {file} is corrupt: its contents do not match their checksum.")
    return stored


def code_naming_options(flat: dict) -> dict[str, Any]:
    """The options of a flat stored config that would make prl import code or join a cluster if acted on.

    An env id `module:Env` imports `module` (a PettingZoo id `pettingzoo:module` too); an encoder `module:function` imports and calls the
    function; the Ray backend with an address connects to that cluster, which can then run code
    in this process. A checkpoint from elsewhere could carry any of these, so they are acted on
    only with the user's say (`require_trusted`).
    """
    named: dict[str, Any] = {}
    for name in ("env", "encoder"):
        value = flat.get(name)
        if isinstance(value, str) and ":" in value:
            named[name] = value
    if flat.get("backend") == "ray":
        named["backend"] = "ray"
    if flat.get("ray_address"):
        named["ray_address"] = flat["ray_address"]
    return named


TRUST_FLAG = "--trust-checkpoint"
"""The command-line flag that lets a checkpoint's code-naming options be acted on."""


def require_trusted(flat: dict, given: Iterable[str], trust: bool, source: PathLike) -> None:
    """Refuse a stored config whose code-naming options (`code_naming_options`) the user has not given.

    `given` names the options the user passed themselves (those replace the stored ones, so
    they are the user's say); `trust` is the user's say for the rest.
    """
    if trust:
        return
    given = set(given)
    unconfirmed = {name: value for name, value in code_naming_options(flat).items() if name not in given}
    if unconfirmed:
        named = ", ".join(f"{name}={value!r}" for name, value in unconfirmed.items())
        flags = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in unconfirmed.items())
        raise ConfigError(
            f"the checkpoint {source} names code to import or a cluster to join ({named}), which a file from "
            f"elsewhere could use to run anything; give them yourself ({flags}) or pass {TRUST_FLAG} "
            "(trust=True in Python) if you trust where the file came from."
        )


def load_policy(path: PathLike, env=None, trust: bool = False):
    """The policy stored in a checkpoint, on the CPU, with the Config it was trained with.

    `env` replaces the stored env (needed when the run used a callable, which a checkpoint
    stores by name only). A stored env id or encoder that names a module to import is refused
    unless `env` replaces it or `trust` is true (`require_trusted`). Returns (policy, config).
    """
    from prl.config import flatten_dict, from_flat
    from prl.envs.factory import probe_env
    from prl.nn.policy import build_policy

    payload = load_checkpoint(path)
    flat = flatten_dict(payload["config"])
    # Evaluation builds no workers, so only what it would import matters here.
    require_trusted(
        {name: value for name, value in flat.items() if name in ("env", "encoder")},
        ["env"] if env is not None else [],
        trust,
        checkpoint_path(path),
    )
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
