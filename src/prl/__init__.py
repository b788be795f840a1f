"""prl: PPO trained by many worker processes that share memory with one learner.

Public names load on first use, so `python scripts/train.py --help` and option errors answer
before torch is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ActorPool": "prl.pool",
    "AsyncPPO": "prl.compat",
    "Batch": "prl.buffers",
    "Config": "prl.config",
    "ConfigError": "prl.errors",
    "EnvVectorizer": "prl.custom_loop",
    "Learner": "prl.learner",
    "PPO": "prl.compat",
    "PPOConfig": "prl.config",
    "PolicyConfig": "prl.config",
    "VecMemory": "prl.custom_loop",
    "WorkerError": "prl.errors",
    "evaluate": "prl.evaluation",
    "train": "prl.training",
    "tuned_config": "prl.presets",
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
    "VecMemory",
    "WorkerError",
    "evaluate",
    "train",
    "tuned_config",
]

if TYPE_CHECKING:
    from prl.buffers import Batch
    from prl.compat import PPO, AsyncPPO
    from prl.config import Config, PolicyConfig, PPOConfig
    from prl.custom_loop import EnvVectorizer, VecMemory
    from prl.errors import ConfigError, WorkerError
    from prl.evaluation import evaluate
    from prl.learner import Learner
    from prl.pool import ActorPool
    from prl.presets import tuned_config
    from prl.training import train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
