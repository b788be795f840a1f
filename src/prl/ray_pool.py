"""RayPool: prl's workers as Ray actors, for a cluster of machines (`backend="ray"`).

The local `ActorPool` is the default on one machine. `RayPool` offers the same interface
(`prl.backends.Collector`) and the same guarantees over Ray, which owns the networking,
placement and membership.

Ray protocol
============
Start. Without `ray_address` the pool starts a local Ray instance with this machine's cores and
shuts it down at `close()`; with one (`auto` or HOST:PORT) it joins that cluster and leaves it
running. If Ray is already initialized in this process, the pool uses it as it is. It then
creates W `RolloutActor`s, each asking Ray for `ray_worker_cpus` CPUs and spread over the
nodes, and waits for each to answer `ready` within `worker_timeout`: an actor that fails to
build its envs raises at once, and one that Ray cannot place (not enough CPUs) ends the start
with one sentence.

Weights. Each published version is put in Ray's object store once (`ray.put` of one float32
vector, in `prl.buffers.flat_state` order). A rollout request passes that object's reference:
each actor fetches a version once (zero-copy on the same node) and keeps it until the next.

Collection. Each actor runs the same `RolloutCollector` as a local worker, into a one-slot
buffer of its own, and returns the slot as numpy arrays through the object store. At most one
rollout per actor is in flight, so the object store holds at most W rollouts and two weight
versions. `collect()` waits on the in-flight results (`ray.wait`, with a timeout), copies them
into the pool's slots and gathers them into a `Batch` exactly as the local pool does.
Synchronous and overlap modes follow the local pool's rules, and each rollout's weight version
is fixed by the pool, so a run with a fixed seed repeats itself.

Failures. An env error inside a rollout comes back as data: the actor has rebuilt its envs with
fresh seeds, and the pool requests the rollout again. An actor that dies (killed, its node
lost) raises `RayActorError` when its result is read: the pool starts a replacement with fresh
seeds and requests the same rollout (same version) again. Both count against
`max_worker_restarts` within `restart_window_s`, as in the local pool. Any other exception in an
actor is raised as `WorkerError` (or `ConfigError`). A cluster that goes away raises
`WorkerError`, so that training saves its checkpoint and prints the resume command.

Shutdown (`close()`, idempotent): kill every actor, and shut Ray down if the pool started it.
"""

from __future__ import annotations

import os
import time
import traceback

import numpy as np
import torch

from prl.backends import Failures
from prl.buffers import Batch, TrajectoryBuffer, flat_state, load_flat_state
from prl.config import Config
from prl.envs import EnvFactory, EnvSpec
from prl.errors import ConfigError, WorkerError
from prl.inference import make_actor
from prl.policy import ActorCritic, build_policy
from prl.worker import RolloutCollector, action_rng, use_one_thread

WAKE_S = 1.0
"""How often `collect()` wakes while it waits, so that a timeout is noticed."""


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
        seed_path: tuple,
    ):
        use_one_thread()  # as a local worker
        self.policy = build_policy(spec, policy_config, normalize_obs, obs_clip)
        self.actor = make_actor(self.policy, action_rng(seed, worker_index, seed_path))
        self.collector = RolloutCollector(factory, spec, self.actor, envs_per_worker, seed, worker_index, seed_path)
        self.buffer = TrajectoryBuffer(1, rollout_steps, envs_per_worker, spec.obs_layout, spec.action_dim)
        self.held_version = -1

    def ready(self) -> tuple[int, str]:
        """The actor's process id and Ray node id, once its envs and policy are built."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def rollout(self, version: int, weights: np.ndarray) -> dict:
        """One rollout acting with `weights` (version `version`): the slot's arrays, or the env error that stopped it."""
        if version != self.held_version:
            load_flat_state(self.policy, torch.from_numpy(weights))
            self.actor.load(self.policy)
            self.held_version = version
        views = self.buffer.numpy_views(0)
        try:
            self.collector.collect(views)
        except Exception as error:
            failed, self.collector = self.collector, None
            self.collector = failed.rebuilt()
            return {"env_error": (type(error).__name__, str(error), traceback.format_exc())}
        return {"slot": views, "version": version}

    def close(self) -> None:
        """Close the envs."""
        if self.collector is not None:
            self.collector.close()


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
        self._ray = ray = import_ray()
        self.config = config
        self.spec = policy.spec
        self.last_wait_s = 0.0
        """Seconds the last `collect()` spent waiting for actors."""
        self.last_transfer_bytes = 0
        """Bytes of rollout data the last `collect()` received."""
        self._failures = Failures(config, "Ray actor")
        self._seed_stream = seed_stream
        self._started_ray = False
        self._actors: list = []
        self._pids: dict[int, int] = {}
        self._nodes: dict[int, str] = {}
        self._inflight: dict[int, tuple] = {}
        self._version = -1
        self._weights = None
        self._closed = False
        if not ray.is_initialized():
            if config.ray_address:
                ray.init(address=config.ray_address, log_to_driver=False)
            else:
                ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
                self._started_ray = True
        try:
            self.buffer = TrajectoryBuffer(
                config.workers, config.rollout_steps, config.envs_per_worker, self.spec.obs_layout, self.spec.action_dim
            )
            self._remote = ray.remote(num_cpus=config.ray_worker_cpus, max_restarts=0, max_task_retries=0)(RolloutActor)
            self._actor_args = (
                EnvFactory(config.env, config.env_kwargs),
                self.spec,
                policy.config,
                policy.obs_normalizer.enabled,
                policy.obs_normalizer.clip,
                config.envs_per_worker,
                config.rollout_steps,
                config.seed,
            )
            path = (seed_stream,) if seed_stream else ()
            self._actors = [self._spawn(index, path) for index in range(config.workers)]
            self._await_ready(list(range(config.workers)))
            self.publish(policy)
        except BaseException:
            self.close()
            raise

    @property
    def version(self) -> int:
        """Version of the latest published weights (0 = the weights the pool started with)."""
        return self._version

    def _spawn(self, index: int, seed_path: tuple):
        return self._remote.options(name=None, scheduling_strategy="SPREAD").remote(index, *self._actor_args, seed_path)

    def _await_ready(self, workers: list[int]) -> None:
        ray = self._ray
        refs = {self._actors[w].ready.remote(): w for w in workers}
        ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=self.config.worker_timeout)
        for ref in ready:
            try:
                self._pids[refs[ref]], self._nodes[refs[ref]] = ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as error:
                raise self._task_error(refs[ref], error) from None
        if pending:
            stuck = sorted(refs[ref] for ref in pending)
            raise WorkerError(
                f"Ray actor(s) {stuck} did not start within {self.config.worker_timeout:.0f} s; the cluster may "
                f"lack {self.config.ray_worker_cpus:g} free CPU(s) per worker: lower --ray-worker-cpus or "
                "--workers, add nodes, or raise --worker-timeout."
            )

    def _task_error(self, worker: int, error: Exception) -> Exception:
        cause = getattr(error, "cause", None)
        if isinstance(cause, ConfigError):
            return ConfigError(str(cause))
        return WorkerError(f"in Ray actor {worker}: {error}")

    def publish(self, policy: torch.nn.Module) -> int:
        """Put `policy`'s weights in the object store as the next version; returns that version."""
        self._weights = self._ray.put(flat_state(policy).numpy())
        self._version += 1
        return self._version

    def collect(self, device: torch.device | str = "cpu") -> Batch:
        """One rollout from every actor, as one batch on `device` (the local pool's modes and rules)."""
        if self._closed:
            raise RuntimeError("the pool is closed; create a new RayPool to collect again.")
        try:
            if not self._inflight:
                self._request_all()
            waiting = time.perf_counter()
            results = self._await_rollouts()
            self.last_wait_s = time.perf_counter() - waiting
            self.last_transfer_bytes = 0
            for worker, result in results.items():
                self._store(worker, result)
            batch = self.buffer.gather(range(self.config.workers), device)
            if self.config.overlap:
                self._request_all()
        except BaseException:
            self.close()
            raise
        return batch

    def _request_all(self) -> None:
        for worker in range(self.config.workers):
            self._request(worker, self._version, self._weights)

    def _request(self, worker: int, version: int, weights) -> None:
        ref = self._actors[worker].rollout.remote(version, weights)
        self._inflight[worker] = (ref, version, weights)

    def _await_rollouts(self) -> dict:
        ray = self._ray
        results: dict = {}
        deadline = time.monotonic() + self.config.worker_timeout
        while self._inflight:
            by_ref = {entry[0]: worker for worker, entry in self._inflight.items()}
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=min(WAKE_S, max(0.0, deadline - time.monotonic())))
            if not ready:
                if time.monotonic() < deadline:
                    continue
                raise WorkerError(
                    f"Ray actor(s) {sorted(self._inflight)} sent no rollout within "
                    f"{self.config.worker_timeout:.0f} s; raise worker_timeout if the env is slow."
                )
            for ref in ready:
                worker = by_ref[ref]
                _, version, weights = self._inflight.pop(worker)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as error:
                    if not self._cluster_alive():
                        raise WorkerError(f"the Ray cluster went away ({error}).") from None
                    self._recover(worker, "died", replace=True)
                    self._request(worker, version, weights)
                    deadline = time.monotonic() + self.config.worker_timeout
                    continue
                except ray.exceptions.RayTaskError as error:
                    raise self._task_error(worker, error) from None
                if "env_error" in result:
                    self._failures.env_error(worker, result["env_error"])
                    self._request(worker, version, weights)
                    deadline = time.monotonic() + self.config.worker_timeout
                    continue
                results[worker] = result
        return results

    def _cluster_alive(self) -> bool:
        try:
            return any(node.get("Alive") for node in self._ray.nodes())
        except Exception:
            return False

    def _store(self, worker: int, result: dict) -> None:
        """Copy one actor's slot into slot `worker` of the pool's buffer."""
        slot = result["slot"]
        target = self.buffer.numpy_views(worker)
        for name, array in slot.items():
            if name == "obs" and isinstance(array, dict):
                for key, leaf in array.items():
                    target["obs"][key][...] = leaf
                    self.last_transfer_bytes += leaf.nbytes
            else:
                target[name][...] = array
                self.last_transfer_bytes += array.nbytes
        self.buffer.stamp(worker, worker, result["version"])

    @property
    def restarts(self) -> int:
        """Worker failures recovered from so far (env errors and replaced actors)."""
        return self._failures.restarts

    def _recover(self, worker: int, what: str, replace: bool) -> None:
        """Count a failure of `worker` within the restart budget; replace the actor if it died."""
        self._failures.count(worker, what)
        if replace:
            self._actors[worker] = self._spawn(worker, (self._seed_stream, 1 << 25, self.restarts))
            self._await_ready([worker])

    def close(self) -> None:
        """Kill every actor, and shut Ray down if this pool started it. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        ray = self._ray
        for actor in self._actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
        self._actors = []
        self._inflight.clear()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def pids(self) -> list[int]:
        """Process ids of the actors (each on its own node), as they reported when they started."""
        return [self._pids[worker] for worker in range(len(self._actors))]

    @property
    def nodes(self) -> list[str]:
        """The Ray node id each actor runs on."""
        return [self._nodes[worker] for worker in range(len(self._actors))]
