"""prl: PPO trained by many worker processes that share memory with one learner.

Public names load on first use, so `python scripts/train.py --help` and option errors answer
before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ActorPool": "prl.collection.pool",
    "AsyncPPO": "prl.compat.async_ppo",
    "Batch": "prl.collection.buffers",
    "Config": "prl.config",
    "ConfigError": "prl.errors",
    "EnvVectorizer": "prl.compat.custom_loop",
    "Learner": "prl.learning.learner",
    "PPO": "prl.compat.async_ppo",
    "PPOConfig": "prl.config",
    "PolicyConfig": "prl.config",
    "RunFailed": "prl.errors",
    "VecMemory": "prl.compat.custom_loop",
    "WorkerError": "prl.errors",
    "evaluate": "prl.run.evaluation",
    "train": "prl.run.training",
    "tuned_config": "prl.envs.presets",
}

__all__ = [
    "ActorPool",
    "AsyncPPO",
    "Batch",
    "Config",
    "ConfigError",
    "EnvVectorizer",
    "Learner",
    "PPO",
    "PPOConfig",
    "PolicyConfig",
    "RunFailed",
    "VecMemory",
    "WorkerError",
    "evaluate",
    "train",
    "tuned_config",
]

if TYPE_CHECKING:
    from prl.collection.buffers import Batch
    from prl.collection.pool import ActorPool
    from prl.compat.async_ppo import PPO, AsyncPPO
    from prl.compat.custom_loop import EnvVectorizer, VecMemory
    from prl.config import Config, PolicyConfig, PPOConfig
    from prl.envs.presets import tuned_config
    from prl.errors import ConfigError, RunFailed, WorkerError
    from prl.learning.learner import Learner
    from prl.run.evaluation import evaluate
    from prl.run.training import train


_MODULES = {"custom_loop": "prl.compat.custom_loop"}
"""Modules the original program imports from the package itself (`from prl import custom_loop as utils`)."""


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'prl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
