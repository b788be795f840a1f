"""Checkpoints: the learner's full state plus the config, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import torch

from prl.config import Config


def save_checkpoint(path: Union[str, Path], state: dict, config: Config) -> None:
    """Write `state` (from `Learner.state_dict`) and the config to `path` via a temporary file and a rename.

    A crash mid-write leaves the previous checkpoint intact. Only tensors and plain Python
    values are stored, so the file loads with `torch.load(weights_only=True)`.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"learner": state, "config": config.to_dict()}, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Union[str, Path]) -> dict:
    """Read a checkpoint written by `save_checkpoint` without allowing it to run code."""
    return torch.load(path, map_location="cpu", weights_only=True)
