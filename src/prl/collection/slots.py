"""SlotQueue: which trajectory slots the workers fill next, and which full ones the learner takes.

This is the one place where the three modes of `Config.mode` differ (protocol in `prl.collection.pool`):
- sync and overlap: one slot per worker (worker w fills slot w), and a batch is every slot,
  in worker order, once all are full.
- async: `slots_per_worker` slots per worker, handed out from one free list to whichever
  workers have the fewest outstanding, so a fast worker keeps filling slots while a slow one
  is still in its rollout; a batch is the `batch_rollouts` slots that were reported full
  first, ordered by worker (one worker's in the order it filled them, so an env's rollouts
  stay in time order). A worker with no free slot to fill waits: that is the backpressure
  when the learner is the slower side. With one slot per worker and a batch of one rollout
  per worker, async mode takes turns exactly as sync mode does.

The queue only does bookkeeping; the pool sends the requests it hands out and tells it what
the workers report. Each worker's requests are kept in the order they were sent, which is the
order the worker serves them in, so the first one is always the rollout in progress.
"""

from __future__ import annotations

from collections import deque

from prl.config import Config


class SlotQueue:
    """Free, requested and full slots of a pool (see the module docstring).

    Args:
        config: the run's options: mode, workers, slots_per_worker and batch_rollouts.
    """

    def __init__(self, config: Config):
        self.asynchronous = config.mode == "async"
        self.workers = config.workers
        self.num_slots = config.num_slots
        self.batch_rollouts = config.rollouts_per_batch
        self.per_worker = config.slots_per_worker if self.asynchronous else 1
        self.free: deque[int] = deque(range(self.num_slots))
        self.requested: list[deque[int]] = [deque() for _ in range(self.workers)]
        """Each worker's requested slots, in the order sent; the first is the rollout in progress."""
        self.full: deque[tuple[int, int]] = deque()
        """(worker, slot) of the slots reported full and not yet taken, in the order they were reported."""

    def hand_out(self) -> list[tuple[int, int]]:
        """Give free slots to workers, as (worker, slot) requests to send, and mark them requested.

        sync and overlap: slot w to worker w, if it is free. async: free slots, oldest first, each
        to a worker with the fewest requested, up to `slots_per_worker` each.
        """
        handed: list[tuple[int, int]] = []
        if not self.asynchronous:
            for worker in range(self.workers):
                if worker in self.free:
                    self.free.remove(worker)
                    self.requested[worker].append(worker)
                    handed.append((worker, worker))
            return handed
        while self.free:
            worker = min(range(self.workers), key=lambda w: len(self.requested[w]))
            if len(self.requested[worker]) >= self.per_worker:
                break
            slot = self.free.popleft()
            self.requested[worker].append(slot)
            handed.append((worker, slot))
        return handed

    def reported(self, worker: int, slot: int) -> None:
        """`worker` filled `slot`, its rollout in progress."""
        if not self.requested[worker] or self.requested[worker][0] != slot:
            raise RuntimeError(f"worker {worker} reported slot {slot}, which it was not filling.")
        self.requested[worker].popleft()
        self.full.append((worker, slot))

    def failed(self, worker: int) -> int:
        """`worker`'s rollout in progress failed (it rebuilt its envs): its slot goes to the back of its requests, to be sent again."""
        slot = self.requested[worker].popleft()
        self.requested[worker].append(slot)
        return slot

    def outstanding(self, worker: int) -> list[int]:
        """`worker`'s requested slots in order: what a replacement worker must be sent again."""
        return list(self.requested[worker])

    def busy(self, worker: int) -> bool:
        """Whether `worker` has a rollout to fill (and so owes a report)."""
        return bool(self.requested[worker])

    def batch_ready(self) -> bool:
        """Whether enough slots are full for a batch."""
        return len(self.full) >= self.batch_rollouts

    def take(self) -> list[int]:
        """The slots of the next batch, freed for the workers again once the caller has copied them."""
        reports = [self.full.popleft() for _ in range(self.batch_rollouts)]
        # Env columns in worker order, whatever order the reports came in (a stable sort: one
        # worker's slots stay in the order it filled them).
        taken = [slot for _, slot in sorted(reports, key=lambda report: report[0])]
        self.free.extend(taken)
        return taken
