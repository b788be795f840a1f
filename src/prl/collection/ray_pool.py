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

import contextlib
import dataclasses
import functools
import math
import os
import re
import socket
import time
import warnings
import weakref
from multiprocessing.connection import wait

import numpy as np
import psutil
import torch

from prl import seeding
from prl.collection.buffers import Batch, SharedWeights, TrajectoryBuffer, load_flat_state
from prl.collection.child import (
    Channel,
    ChildError,
    ParentGone,
    child_process,
    seed_process,
    start_child,
    use_one_thread,
)
from prl.collection.failures import Failures, stuck
from prl.collection.processes import stop_processes, worker_context
from prl.collection.rollout import RolloutCollector, action_rng
from prl.collection.slots import SlotQueue
from prl.config import Config
from prl.envs.factory import EnvFactory
from prl.envs.spec import EnvSpec
from prl.errors import ConfigError, WorkerError
from prl.nn.actors import make_actor
from prl.nn.policy import ActorCritic, build_policy

WAKE_S = 1.0
"""How often a waiting driver (and the learner waiting on it) wakes, so that a timeout or a lost cluster is noticed."""

PROBE_S = 2.0
"""How long the head node's GCS port may take to accept a connection before the cluster counts as gone."""

RAY_START_S = 60.0
"""Time allowed to start or join Ray, on top of `worker_timeout` for the actors to build their envs."""

SLACK_S = 30.0
"""How long the learner waits for a driver message beyond `worker_timeout` (the longest step a driver takes silently)."""

CLOSE_S = 30.0
"""How long a closing driver may take to kill its actors and stop the Ray instance it started."""


def import_ray():
    """The ray module, or a ConfigError that names the extra to install."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError(
            f"the ray backend needs the ray package, which is not installed ({error}); "
            'install prl\'s ray extra: pip install -e ".[ray]".'
        ) from error
    return ray


def answers(address: str, timeout: float = PROBE_S) -> bool:
    """Whether HOST:PORT accepts a TCP connection within `timeout` seconds."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


class RolloutActor:
    """One worker on a Ray node: its envs, its copy of the policy, and a one-slot buffer it returns."""

    def __init__(
        self,
        worker_index: int,
        factory: EnvFactory,
        spec: EnvSpec,
        policy_config,
        normalize_obs: bool,
        obs_clip: float,
        envs_per_worker: int,
        rollout_steps: int,
        seed: int,
        incarnation: tuple,
    ):
        use_one_thread()  # as a local worker
        seed_process(seeding.process_seed(seed, worker_index, incarnation))
        self.collector: RolloutCollector | None = None
        """None until built, and while a failed rollout rebuilds it."""
        self.failure: ChildError | None = None
        """What stopped the actor from building its envs and policy, carried back by `ready`."""
        self.held_version = -1
        try:
            self.policy = build_policy(spec, policy_config, normalize_obs, obs_clip)
            self.actor = make_actor(self.policy, action_rng(seed, worker_index, incarnation))
            self.collector = RolloutCollector(
                factory, spec, self.actor, envs_per_worker, seed, worker_index, incarnation
            )
            self.buffer = TrajectoryBuffer(
                1,
                rollout_steps,
                envs_per_worker,
                spec.obs_layout,
                spec.action_dim,
                state_size=self.policy.state_size,
                agents=bool(spec.agents),
            )
        except Exception as error:
            self.failure = ChildError.of(error)

    def ready(self) -> tuple[int, str, ChildError | None]:
        """The actor's process id, its Ray node id and what stopped it from starting (None once its envs and policy are built)."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id(), self.failure

    def rollout(self, version: int, weights: np.ndarray) -> dict:
        """One rollout acting with `weights` (version `version`): the slot's arrays, or the env error that stopped it."""
        if version != self.held_version:
            load_flat_state(self.policy, torch.from_numpy(weights))
            self.actor.load(self.policy)
            self.held_version = version
        views = self.buffer.numpy_views(0)
        assert self.collector is not None  # a failed rebuild raised, which ends the run
        try:
            self.collector, env_error = self.collector.attempt(functools.partial(self.collector.collect, views))
        except Exception as error:  # not the env's bad luck, or its envs could not be rebuilt: the run stops
            return {"error": ChildError.of(error)}
        if env_error is not None:
            return {"env_error": env_error}
        views["versions"].fill(version)
        return {"slot": views, "version": version}

    def close(self) -> None:
        """Close the envs."""
        if self.collector is not None:
            self.collector.close()


def local_ray_options(config: Config) -> dict:
    """`ray.init`'s options for the Ray instance a run starts for itself (no `ray_address`).

    It claims only the CPUs its actors ask for (`workers` x `ray_worker_cpus`), so two runs on
    one machine do not each claim every core, and starts no dashboard (an open web port). Ray's
    own servers listen on the machine's address, not on localhost only, and Ray offers no option
    to change that; from Ray 2.59 on, a local instance requires Ray's token authentication (see
    docs/cluster.md for older versions).
    """
    return {
        "address": "local",
        "num_cpus": max(1, math.ceil(config.workers * config.ray_worker_cpus)),
        "include_dashboard": False,
        "log_to_driver": False,
    }


class RayDriver:
    """The Ray side of a `RayPool`, in the driver process: Ray, the actors, and the shared slots they fill.

    Args:
        config: the run's options.
        actor_args: what every `RolloutActor` is built from, after its index and before its seed path.
        buffer: the pool's shared trajectory buffer, of `Config.num_slots` slots; each rollout is copied into the slot it was requested for.
        weights: the pool's shared weights; `publish(v)` puts version v in the object store.
        seed_stream: mixed into the actors' seeds, as in `ActorPool`.
        address: the cluster to join, or None to start a local Ray instance (shut down by `close()`).
        heartbeat: called each second the driver waits for actors.
    """

    def __init__(
        self,
        config: Config,
        actor_args: tuple,
        buffer: TrajectoryBuffer,
        weights: SharedWeights,
        seed_stream: int,
        address: str | None,
        *,
        heartbeat=lambda: None,
    ):
        self._ray = ray = import_ray()
        self.config = config
        self.buffer = buffer
        self.weights = weights
        self.heartbeat = heartbeat
        self.failures = Failures(config, "Ray actor")
        self.pids: dict[int, int] = {}
        self.nodes: dict[int, str] = {}
        self._seed_stream = seed_stream
        self._actor_args = actor_args
        self._actors: list = []
        self._slots = SlotQueue(config)
        self._requests: dict[int, tuple] = {}
        """Each requested slot's (result ref, weight version, weights ref), until its rollout is stored."""
        self._heard = [time.monotonic()] * config.workers
        """When each actor last returned a rollout, or was asked for one while it had none: its stuck clock."""
        self._version = -1
        self._weights = None
        self._cluster_gone = False
        self._started_ray = address is None
        if address is None:
            ray.init(**local_ray_options(config))
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as error:
                raise ConfigError(
                    f"could not join the Ray cluster at {address!r} ({error}); start it with `ray start --head` "
                    "on its head node, or fix --ray-address."
                ) from None
        try:
            self._head = ray.get_runtime_context().gcs_address
            self._remote = ray.remote(num_cpus=config.ray_worker_cpus, max_restarts=0, max_task_retries=0)(RolloutActor)
            first = seeding.first_incarnation(seed_stream)
            self._actors = [self._spawn(index, first) for index in range(config.workers)]
            self._await_ready(list(range(config.workers)))
            self.publish(weights.current_version())
        except BaseException:
            self.close()
            raise

    def _spawn(self, index: int, incarnation: tuple):
        return self._remote.options(name=None, scheduling_strategy="SPREAD").remote(
            index, *self._actor_args, incarnation
        )

    def _await_ready(self, workers: list[int]) -> None:
        ray = self._ray
        refs = {self._actors[w].ready.remote(): w for w in workers}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.config.worker_timeout)
        for ref in ready:
            try:
                self.pids[refs[ref]], self.nodes[refs[ref]], failure = ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
                raise self._task_error(refs[ref], error) from None
            if failure is not None:
                raise failure.exception(f"Ray actor {refs[ref]}")
        if pending:
            stuck = sorted(refs[ref] for ref in pending)
            raise WorkerError(
                f"Ray actor(s) {stuck} did not start within {self.config.worker_timeout:.0f} s; the cluster may "
                f"lack {self.config.ray_worker_cpus:g} free CPU(s) per worker: lower --ray-worker-cpus or "
                "--workers, add nodes, or raise --worker-timeout."
            )

    def _task_error(self, worker: int, error: Exception) -> Exception:
        """An error Ray itself reports for an actor (prl's own errors come back as `ChildError` data), as prl's
        own: the actor's exception line first, then Ray's report."""
        cause = getattr(error, "cause", None)
        if isinstance(cause, ConfigError):
            return ConfigError(str(cause))
        report = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # Ray colours the task's name
        last = report.splitlines()[-1].strip() if report else type(error).__name__
        if last.startswith(("ConfigError: ", "prl.errors.ConfigError: ")):  # raised while the actor started
            return ConfigError(last.split(": ", 1)[1])
        return WorkerError(f"in Ray actor {worker}: {last}\n{report}")

    def publish(self, version: int) -> None:
        """Put weight version `version` (already in the shared weights) in the object store; in async mode,
        ask the actors for the slots the queue hands out, acting with it."""
        self._weights = self._ray.put(self.weights.flat[version % 2].numpy())
        self._version = version
        if self._slots.asynchronous:
            self._request_rollouts()

    def collect(self) -> dict:
        """Fill the next batch's slots of the shared buffer; returns the collection's figures, `slots` among
        them (the slots of the batch, in worker order)."""
        self._check_cluster()
        if self._slots.asynchronous or not self._requests:
            self._request_rollouts()  # sync: the batch's rollouts; async: any slot still free
        waiting = time.perf_counter()
        transfer_bytes = self._await_rollouts()
        wait_s = time.perf_counter() - waiting
        slots = self._slots.take()  # stored already; the learner copies them before the next request fills them
        if self.config.mode == "overlap":
            self._request_rollouts()
        return dict(
            wait_s=wait_s,
            transfer_bytes=transfer_bytes,
            restarts=self.failures.restarts,
            pids=self.pids,
            nodes=self.nodes,
            slots=slots,
        )

    def _request_rollouts(self) -> None:
        """Ask the actors for the slots the queue hands out, acting with the newest published weights."""
        for worker, slot in self._slots.hand_out():
            self._request(worker, slot, self._version, self._weights)

    def _request(self, worker: int, slot: int, version: int, weights) -> None:
        if len(self._slots.outstanding(worker)) == 1:
            self._heard[worker] = time.monotonic()  # idle until now: its stuck clock starts
        self._requests[slot] = (self._actors[worker].rollout.remote(version, weights), version, weights)

    def _replace(self, worker: int, what: str) -> None:
        """Replace a dead or stuck actor and ask the replacement for every rollout its predecessor owed, in order."""
        self._recover(worker, what)
        self._heard[worker] = time.monotonic()
        for slot in self._slots.outstanding(worker):
            _, version, weights = self._requests[slot]
            self._request(worker, slot, version, weights)

    def _await_rollouts(self) -> int:
        """Store the rollouts that come back, each in its slot, until the queue has a batch; returns the bytes received.

        Only each actor's rollout in progress (its first request) is waited on: Ray runs an
        actor's tasks in the order they were sent, so the queue hears of them in that order.
        """
        ray = self._ray
        transfer_bytes = 0
        while not self._slots.batch_ready():
            now = time.monotonic()
            in_progress = {w: self._slots.outstanding(w)[0] for w in range(self.config.workers) if self._slots.busy(w)}
            if not in_progress:
                raise RuntimeError("collect() has no rollout to wait for; publish() asks the actors for more.")
            for worker, slot in in_progress.items():  # stuck in an env: killed and replaced, as a dead one is
                if now - self._heard[worker] >= self.config.worker_timeout:
                    # A result that came back while the learner was busy elsewhere is not a silence.
                    if ray.wait([self._requests[slot][0]], num_returns=1, timeout=0)[0]:
                        continue
                    with contextlib.suppress(Exception):
                        ray.kill(self._actors[worker], no_restart=True)
                    self._replace(worker, stuck(self.config.worker_timeout))
            by_ref = {self._requests[slot][0]: (worker, slot) for worker, slot in in_progress.items()}
            first_due = min(self._heard[w] for w in in_progress) + self.config.worker_timeout
            timeout = min(WAKE_S, max(0.0, first_due - time.monotonic()))
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
            if not ready:
                self._check_cluster()
                self.heartbeat()
                continue
            worker, slot = by_ref[ready[0]]
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayActorError:
                self._check_cluster()
                self._replace(worker, "died")
                continue
            except ray.exceptions.RayTaskError as error:
                raise self._task_error(worker, error) from None
            self._heard[worker] = time.monotonic()
            if "error" in result:
                raise result["error"].exception(f"Ray actor {worker}")
            if "env_error" in result:
                self.failures.env_error(worker, result["env_error"])
                _, version, weights = self._requests[slot]
                self._slots.failed(worker)  # to the back of its requests, where the new request goes
                self._request(worker, slot, version, weights)
                continue
            transfer_bytes += self._store(slot, worker, result)
            del self._requests[slot]
            self._slots.reported(worker, slot)
        return transfer_bytes

    def _check_cluster(self) -> None:
        """Raise WorkerError if the head node no longer answers: Ray ends this process a minute later."""
        if not answers(self._head):
            self._cluster_gone = True
            raise WorkerError(f"the Ray cluster went away: its head node at {self._head} no longer answers.")

    def _store(self, slot: int, worker: int, result: dict) -> int:
        """Copy actor `worker`'s rollout into `slot` of the shared buffer; returns the bytes it held."""
        arrays, copied = result["slot"], 0
        target = self.buffer.numpy_views(slot)
        for name, array in arrays.items():
            if name == "obs" and isinstance(array, dict):
                for key, leaf in array.items():
                    target["obs"][key][...] = leaf
                    copied += leaf.nbytes
            else:
                target[name][...] = array
                copied += array.nbytes
        self.buffer.stamp(slot, worker, result["version"])
        return copied

    def _recover(self, worker: int, what: str) -> None:
        """Count a death of `worker` within the restart budget and start its replacement."""
        self.failures.count(worker, what)
        self._actors[worker] = self._spawn(worker, seeding.replacement(self._seed_stream, self.failures.restarts))
        self._await_ready([worker])

    def close(self) -> None:
        """Kill every actor, and shut Ray down if this driver started it."""
        ray = self._ray
        if not self._cluster_gone:  # with the head gone, there is no one left to ask
            for actor in self._actors:
                try:
                    ray.kill(actor)
                except Exception:
                    pass
        self._actors = []
        self._requests.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()


def drive(channel: Channel, ray_environment: dict, *driver_args) -> None:
    """The body of the driver process, run by `prl.collection.child.child_main`; follows the protocol written above.

    `driver_args` are `RayDriver`'s, before its heartbeat. `ray_environment` is the learner's
    RAY_* variables when the pool started (a forkserver child would otherwise see them as they
    were when the server started), such as the token mode of a Ray instance the learner's
    process started.
    """
    for name in [name for name in os.environ if name.startswith("RAY_") and name not in ray_environment]:
        del os.environ[name]
    os.environ.update(ray_environment)
    warnings.showwarning = lambda message, *_: channel.send(("warning", str(message)))  # Ray's threads warn too
    driver = None
    try:
        driver = RayDriver(*driver_args, heartbeat=lambda: channel.send(("wait",)))
        channel.send(("ready", driver.pids, driver.nodes))
        while True:
            message = channel.recv()
            if message is None:
                break
            if message[0] == "publish":
                driver.publish(message[1])
                channel.send(("published",))
            else:
                channel.send(("collected", driver.collect()))
    except ParentGone:
        raise
    except BaseException as error:
        channel.report(error)  # before the clean-up below, which may take seconds
        raise
    finally:
        if driver is not None:
            driver.close()


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
