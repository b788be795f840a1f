"""The Ray side of a `prl.collection.ray_pool.RayPool`: the driver process, its Ray actors, and the slots they fill.

The protocol is written in `prl.collection.ray_pool`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import socket
import time
import warnings

import numpy as np
import torch

from prl import seeding
from prl.collection.buffers import SharedWeights, TrajectoryBuffer, load_flat_state
from prl.collection.child import (
    Channel,
    ChildError,
    ParentGone,
    seed_process,
    use_one_thread,
)
from prl.collection.failures import Failures, stuck
from prl.collection.rollout import RolloutCollector, action_rng
from prl.collection.slots import SlotQueue
from prl.config import Config
from prl.envs.factory import EnvFactory
from prl.envs.spec import EnvSpec
from prl.errors import ConfigError, WorkerError
from prl.nn.actors import make_actor
from prl.nn.policy import build_policy

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
