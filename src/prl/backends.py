"""Collection backends: the one interface the training loop collects through, and the one place a backend is chosen.

- `local` (the default): `prl.pool.ActorPool`, worker processes on this machine writing into
  shared memory.
- `ray`: `prl.ray_pool.RayPool`, Ray actors on the nodes of a cluster (the ray extra).

Both run the same rollout code (`prl.worker.RolloutCollector`) and return the same `Batch`.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from typing import Protocol

import torch

from prl.buffers import Batch
from prl.config import Config
from prl.errors import WorkerError
from prl.policy import ActorCritic


class Collector(Protocol):
    """What the learner loop needs from a backend."""

    restarts: int
    """Worker failures recovered from so far."""
    last_wait_s: float
    """Seconds the last `collect()` spent waiting for workers."""
    inference: str
    """worker or central: where actions are computed."""

    def collect(self, device: torch.device | str = "cpu") -> Batch:
        """One rollout from every worker, as one batch on `device`."""

    def publish(self, policy: torch.nn.Module) -> int:
        """Make `policy`'s weights the ones workers act with from their next rollout; returns the version."""

    def close(self) -> None:
        """Stop every worker; nothing is left running."""

    def __enter__(self) -> Collector: ...

    def __exit__(self, *exc_info) -> None: ...


class Failures:
    """The failure rules both backends share: each worker's restart budget, and what an env error means.

    `name` is how messages name a worker ("worker", "Ray actor").
    """

    def __init__(self, config: Config, name: str):
        self.config = config
        self.name = name
        self.restarts = 0
        """Failures recovered from so far, over all workers."""
        self._times: dict[int, deque] = {index: deque() for index in range(config.workers)}

    def count(self, worker: int, what: str) -> None:
        """Count a failure of `worker`; raise WorkerError once it has failed more than the budget allows
        within the window, else warn that it restarts."""
        now = time.monotonic()
        times = self._times[worker]
        times.append(now)
        while times and now - times[0] > self.config.restart_window_s:
            times.popleft()
        if len(times) > self.config.max_worker_restarts:
            raise WorkerError(
                f"{self.name} {worker} failed {len(times)} times within {self.config.restart_window_s:.0f} s "
                f"(last: {what}); fix the env or raise --max-worker-restarts."
            )
        self.restarts += 1
        warnings.warn(
            f"prl: {self.name} {worker} {what}; restarting it ({self.restarts} restart(s) so far).", stacklevel=4
        )

    def env_error(self, worker: int, payload: tuple) -> None:
        """An env raised, or returned non-finite data, in `worker` (which rebuilt its envs): stop or count it."""
        error_type, message, _ = payload
        if error_type == "NonFiniteData" and self.config.nan_policy == "error":
            raise WorkerError(
                f"in {self.name} {worker}: {message}; pass --nan-policy drop to discard such rollouts instead."
            )
        self.count(worker, f"raised {error_type}: {message}")


def open_collector(config: Config, policy: ActorCritic, seed_stream: int = 0) -> Collector:
    """The backend `config.backend` names, started with `policy`'s weights as version 0."""
    if config.backend == "ray":
        from prl.ray_pool import RayPool

        return RayPool(config, policy, seed_stream)
    from prl.pool import ActorPool

    return ActorPool(config, policy, seed_stream)
