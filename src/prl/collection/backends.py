"""Collection backends: the one interface the training loop collects through, and the one place a backend is chosen.

- `local` (the default): `prl.collection.pool.ActorPool`, worker processes on this machine writing into
  shared memory.
- `ray`: `prl.collection.ray_pool.RayPool`, Ray actors on the nodes of a cluster (the ray extra).

Both run the same rollout code (`prl.collection.rollout.RolloutCollector`) and return the same `Batch`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from prl.collection.buffers import Batch
from prl.config import Config
from prl.nn.policy import ActorCritic


class Collector(Protocol):
    """What the learner loop needs from a backend."""

    @property
    def restarts(self) -> int:
        """Worker failures recovered from so far."""

    last_wait_s: float
    """Seconds the last `collect()` spent waiting for workers."""
    inference: str
    """worker or central: where actions are computed."""

    def collect(self, device: torch.device | str = "cpu") -> Batch:
        """The next batch's rollouts, as one batch on `device`: one from every worker, or in async mode the
        first `batch_rollouts` to finish (`prl.collection.slots`)."""

    def publish(self, policy: torch.nn.Module) -> int:
        """Make `policy`'s weights the ones workers act with from their next rollout; returns the version.
        In async mode it also hands the slots of the batch just learned back to the workers."""

    def close(self) -> None:
        """Stop every worker; nothing is left running."""

    def __enter__(self) -> Collector: ...

    def __exit__(self, *exc_info) -> None: ...


def open_collector(config: Config, policy: ActorCritic, seed_stream: int = 0) -> Collector:
    """The backend `config.backend` names, started with `policy`'s weights as version 0."""
    if config.backend == "ray":
        from prl.collection.ray_pool import RayPool

        return RayPool(config, policy, seed_stream)
    from prl.collection.pool import ActorPool

    return ActorPool(config, policy, seed_stream)
