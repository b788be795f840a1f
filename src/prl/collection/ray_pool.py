"""RayPool: prl's workers as Ray actors, for a cluster of machines (`backend="ray"`).

The local `ActorPool` is the default on one machine. `RayPool` offers the same interface
(`prl.collection.backends.Collector`) and the same guarantees over Ray, which owns the networking,
placement and membership.

Ray protocol
============
Processes. The learner's process never connects to Ray. A driver process (`drive`, started
like a local worker) does: Ray ends a driver whose node's Ray services or cluster head go away,
and the learner must outlive that to save the run. Learner and driver share the pool's
trajectory buffer and weights in shared memory (`prl.collection.buffers`), as a local pool's workers do,
and one duplex pipe carries small messages. Learner -> driver: ("publish", version),
("collect",), or None ("close"). Driver -> learner: ("ready", pids, nodes), ("published",),
("collected", stats), ("warning", text) for each recovered failure, ("wait",) each second it
waits for rollouts, and ("error", type, message). The learner waits on the pipe and the
driver's sentinel with a timeout that every message renews (`worker_timeout` plus `SLACK_S`:
the driver's longest silent step is waiting for a replacement actor); a driver that ends, or
whose pipe breaks, raises `WorkerError`, so that training saves its checkpoint and prints the
resume command.

Start. Without `ray_address` the driver starts a local Ray instance with this machine's cores
and shuts it down when it closes; with one (`auto` or HOST:PORT) it joins that cluster and
leaves it running. If Ray is already initialized in the learner's process, the driver joins
that instance. It then creates W `RolloutActor`s, each asking Ray for `ray_worker_cpus` CPUs
and spread over the nodes, and waits for each to answer `ready` within `worker_timeout`: an
actor that fails to build its envs answers with its error as data (a
`prl.collection.child.ChildError`), which ends the start at once, and one that Ray cannot place
(not enough CPUs) ends the start with one sentence.

Weights. The learner publishes a version into the shared weights and names it to the driver,
which puts it in Ray's object store once (one float32 vector, in `prl.collection.buffers.flat_state`
order) before it answers. A rollout request passes that object's reference: each actor
fetches a version once (zero-copy on the same node) and keeps it until the next.

Collection. Each actor runs the same `RolloutCollector` as a local worker, into a one-slot
buffer of its own, and returns the slot as numpy arrays through the object store. Which slot of
the shared buffer each rollout fills, and which full slots a batch takes, the driver asks the
same `prl.collection.slots.SlotQueue` as the local pool: a request names its slot, the driver
waits on each actor's rollout in progress (`ray.wait`, with a timeout; Ray runs an actor's tasks
in the order they were sent), copies each result into its slot as it comes back, and answers
with the batch's slots once the queue has one; the learner gathers them into a `Batch` exactly
as the local pool does. In the synchronous modes each rollout's weight version is fixed by the
learner, so a run with a fixed seed repeats itself, and the object store holds at most W
rollouts and two weight versions. In async mode each request acts with the newest version
published when it was sent (`publish` sends the slots the queue hands out), and the object store
holds at most W x slots_per_worker rollouts.

Failures. An env error inside a rollout comes back as data: the actor has rebuilt its envs with
fresh seeds, and the driver requests the rollout again. An actor that dies (killed, its node
lost) raises `RayActorError` when its result is read: the driver starts a replacement with
fresh seeds and requests the same rollout (same version) again. An actor whose rollout has
not come back within `worker_timeout` (stuck in an env) is killed and replaced the same way.
A replacement is asked for every rollout its predecessor owed, in order.
All three count against
`max_worker_restarts` within `restart_window_s`, as in the local pool. Any other exception in an
actor comes back as a `ChildError` too and is raised as `WorkerError` ("... in Ray actor N"), or
as `ConfigError`; what Ray itself reports is turned into the same. The driver checks that the head node's
GCS port still accepts connections at each collection and each second it waits; if not, the
cluster is gone and it raises `WorkerError` at once (Ray itself would end it a minute later).

Shutdown (`close()`, idempotent, also at interpreter exit): the learner sends None; the driver
kills every actor (unless the cluster is gone) and shuts Ray down if it started it; the learner
joins it for up to `CLOSE_S`, then terminates it, and kills whatever the driver had started
that is still running (a Ray instance whose driver was killed).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
import weakref
from multiprocessing.connection import wait

import psutil
import torch

from prl.collection.buffers import Batch, SharedWeights, TrajectoryBuffer
from prl.collection.child import child_process, start_child
from prl.collection.processes import stop_processes, worker_context
from prl.collection.ray_driver import CLOSE_S, RAY_START_S, SLACK_S, WAKE_S, answers, drive, import_ray
from prl.config import Config
from prl.envs.factory import EnvFactory
from prl.errors import ConfigError, WorkerError
from prl.nn.policy import ActorCritic


def stop_driver(process, conn, driver: list, ray_processes: list) -> None:
    """Close the driver process (protocol order, then terminate); then kill what it started and left running.

    `driver` holds the driver's `psutil.Process` once it started (which also guards against a
    reused pid); `ray_processes` are its descendants when it was ready, and again now: a Ray
    instance it started. A driver that Ray or a signal ended cannot stop them, and some of them
    outlive it by a minute.
    """
    for handle in driver:
        try:
            if handle.is_running():
                ray_processes.extend(handle.children(recursive=True))
        except psutil.Error:
            pass  # it has ended
    stop_processes([process], [conn], CLOSE_S)
    for leftover in ray_processes:
        try:
            leftover.kill()  # psutil checks that the pid still names the same process
        except psutil.Error:
            pass
    ray_processes.clear()
    driver.clear()


class RayPool:
    """Rollouts from Ray actors, with `ActorPool`'s interface (see the protocol above).

    Args:
        config: the run's options; `ray_address` and `ray_worker_cpus` place the actors.
        policy: the learner's policy; its current weights are published as version 0.
        seed_stream: mixed into the actors' seeds, as in `ActorPool`.
    """

    inference = "worker"
    """Ray actors always act with their own copy of the policy."""

    def __init__(self, config: Config, policy: ActorCritic, seed_stream: int = 0):
        ray = import_ray()
        self.config = config
        self.spec = policy.spec
        self.last_wait_s = 0.0
        """Seconds the last `collect()` spent waiting for actors."""
        self.last_transfer_bytes = 0
        """Bytes of rollout data the last `collect()` received."""
        self.restarts = 0
        """Actor failures recovered from so far (env errors and replaced actors)."""
        self._pids: dict[int, int] = {}
        self._nodes: dict[int, str] = {}
        address = config.ray_address
        if address and address != "auto" and not answers(address):
            raise ConfigError(
                f"nothing answers at the Ray address {address!r}; start the cluster with `ray start --head` "
                "on its head node, or fix --ray-address."
            )
        if not address and ray.is_initialized():
            address = ray.get_runtime_context().gcs_address
        self.buffer = TrajectoryBuffer(
            config.num_slots,
            config.rollout_steps,
            config.envs_per_worker,
            self.spec.obs_layout,
            self.spec.action_dim,
            state_size=policy.state_size,
            agents=bool(self.spec.agents),
        )
        self.weights = SharedWeights(policy)
        self.weights.publish(policy)
        actor_args = (
            EnvFactory(config.env, config.env_kwargs),
            self.spec,
            policy.config,
            policy.obs_normalizer.enabled,
            policy.obs_normalizer.clip,
            config.envs_per_worker,
            config.rollout_steps,
            config.seed,
        )
        context = worker_context(config)
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = child_process(
            context,
            "prl-ray-driver",
            drive,
            child_conn,
            {name: value for name, value in os.environ.items() if name.startswith("RAY_")},
            dataclasses.replace(config, env=config.env_name, env_kwargs={}),  # the envs travel in actor_args
            actor_args,
            self.buffer,
            self.weights,
            seed_stream,
            address or None,
        )
        driver: list = []
        ray_processes: list = []
        self._finalizer = weakref.finalize(self, stop_driver, self._process, self._conn, driver, ray_processes)
        try:
            start_child(self._process, child_conn)
            driver.append(psutil.Process(self._process.pid))
            self._pids, self._nodes = self._await("ready", "start", config.worker_timeout + RAY_START_S)
            ray_processes.extend(driver[0].children(recursive=True))
        except BaseException:
            self.close()
            raise

    @property
    def version(self) -> int:
        """Version of the latest published weights (0 = the weights the pool started with)."""
        return self.weights.current_version()

    @property
    def pids(self) -> list[int]:
        """Process ids of the actors (each on its own node), as they reported when they started."""
        return [self._pids[worker] for worker in sorted(self._pids)]

    @property
    def nodes(self) -> list[str]:
        """The Ray node id each actor runs on."""
        return [self._nodes[worker] for worker in sorted(self._nodes)]

    @property
    def driver_pid(self) -> int:
        """Process id of the driver process, the one that talks to Ray."""
        return self._process.pid

    def publish(self, policy: torch.nn.Module) -> int:
        """Put `policy`'s weights in the object store as the next version; returns that version."""
        if not self._finalizer.alive:
            raise RuntimeError("the pool is closed; create a new RayPool to publish again.")
        version = self.weights.publish(policy)
        self._call(("publish", version), "published", "publish")
        return version

    def collect(self, device: torch.device | str = "cpu") -> Batch:
        """The next batch's rollouts from the actors, as one batch on `device` (the local pool's modes and rules)."""
        if not self._finalizer.alive:
            raise RuntimeError("the pool is closed; create a new RayPool to collect again.")
        (stats,) = self._call(("collect",), "collected", "rollout")
        self.last_wait_s = stats["wait_s"]
        self.last_transfer_bytes = stats["transfer_bytes"]
        self.restarts = stats["restarts"]
        self._pids, self._nodes = stats["pids"], stats["nodes"]
        return self.buffer.gather(stats["slots"], device)

    def _call(self, message: tuple, reply: str, what: str) -> tuple:
        try:
            try:
                self._conn.send(message)
            except (OSError, EOFError):
                raise self._driver_ended(what) from None
            return self._await(reply, what, self.config.worker_timeout + SLACK_S)
        except BaseException:
            self.close()
            raise

    def _await(self, reply: str, what: str, allowance: float) -> tuple:
        """The payload of the driver's `reply`, re-issuing its warnings; raises if it fails, ends or falls silent."""
        deadline = time.monotonic() + allowance
        while True:
            ready = wait(
                [self._conn, self._process.sentinel], timeout=min(WAKE_S, max(0.0, deadline - time.monotonic()))
            )
            if not ready:
                if time.monotonic() < deadline:
                    continue
                raise WorkerError(
                    f"the Ray driver process sent nothing for {allowance:.0f} s during {what}; "
                    "check the cluster with `ray status`, or raise --worker-timeout."
                )
            try:
                if self._conn not in ready and not self._conn.poll():
                    raise EOFError
                kind, *payload = self._conn.recv()
            except (EOFError, OSError):
                raise self._driver_ended(what) from None
            deadline = time.monotonic() + allowance
            if kind == reply:
                return tuple(payload)
            if kind == "warning":
                warnings.warn(payload[0], stacklevel=4)
            elif kind == "error":
                raise payload[1].exception("the Ray driver")

    def _driver_ended(self, what: str) -> WorkerError:
        self._process.join(timeout=WAKE_S)
        return WorkerError(
            f"the Ray driver process ended during {what} (exit code {self._process.exitcode}); Ray ends it when "
            "the cluster's head node or this machine's Ray node is lost."
        )

    def close(self) -> None:
        """Close the driver (it kills the actors and stops a Ray instance it started); nothing is left running. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
