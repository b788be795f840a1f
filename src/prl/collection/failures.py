"""Failure rules shared by the collection backends: restart budgets and what an env error means."""

from __future__ import annotations

import time
import warnings
from collections import deque

from prl.collection.child import ChildError
from prl.config import Config
from prl.errors import WorkerError


def stuck(timeout_s: float) -> str:
    """How a restart message names a worker killed for sending nothing within `timeout_s` (stuck in an env)."""
    return (
        f"sent no rollout within {timeout_s:.0f} s, so it was killed (raise --worker-timeout if the env is this slow)"
    )


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

    def env_error(self, worker: int, error: ChildError) -> None:
        """An env raised, or returned non-finite data, in `worker` (which rebuilt its envs): stop or count it."""
        if error.type_name == "NonFiniteData" and self.config.nan_policy == "error":
            raise WorkerError(
                f"in {self.name} {worker}: {error.message}; pass --nan-policy drop to discard such rollouts instead."
            )
        self.count(worker, f"raised {error.type_name}: {error.message}")
