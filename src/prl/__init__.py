"""prl: PPO trained by many worker processes that share memory with one learner."""

from prl.buffers import Batch
from prl.config import Config, PolicyConfig, PPOConfig
from prl.errors import ConfigError, WorkerError
from prl.evaluate import evaluate
from prl.learner import Learner
from prl.pool import ActorPool
from prl.presets import tuned_config
from prl.training import train

__version__ = "0.1.0"

__all__ = [
    "ActorPool",
    "Batch",
    "Config",
    "ConfigError",
    "Learner",
    "PPOConfig",
    "PolicyConfig",
    "WorkerError",
    "evaluate",
    "train",
    "tuned_config",
]
