"""ActorPool: starts the worker processes, hands out trajectory slots, and shuts everything down.

Process protocol
================
Channels. Each worker has one duplex pipe to the parent. Parent -> worker carries rollout
requests, (slot, weight version): "fill this slot acting with this version" (None: with the
newest one when the rollout starts), or None ("exit"). A worker serves its requests in the
order they arrive.
Worker -> parent carries tuples: ("ready", w, None), ("slot", w, slot) when a slot is full,
("env_error", w, ChildError) when an env failed, ("error", w, ChildError) when anything else
raised (`prl.collection.child.ChildError`: the exception as data). Trajectories and weights
never travel through pipes: they live in shared tensors (`prl.collection.buffers`), and only
slot indices and version numbers move.

Start. The parent allocates the shared buffer and weights, publishes version 0, and starts
W daemon processes with forkserver (or spawn; never plain fork, which is unsafe once CUDA is
up). Each runs `prl.collection.child.child_main` with `prl.collection.worker.worker_main` as its
body: it ignores SIGINT, uses one thread, seeds its process, sampler and envs from named streams
of the run seed (`prl.seeding`), builds its envs and policy, loads the weights, resets, and
sends "ready".
The parent waits for every "ready" within `worker_timeout`; an error message, a dead process
or the timeout aborts the start, closes what did start, and raises.

Collection. Which slots are requested from which worker, and which full ones make a batch, is
decided by the slot queue (`prl.collection.slots.SlotQueue`), the one place where the modes
differ. A request names the slot and the weight version; the worker loads that version if it
does not hold it yet, runs one rollout, writes each step's version into the slot, stamps it,
and reports it. `collect()` waits on the pipes and process sentinels of every worker with a
rollout to fill (`multiprocessing.connection.wait`, with a timeout) until the queue has a
batch, then copies those slots into a batch, which frees them.
- Synchronous mode (default): worker w fills slot w. `collect()` sends the requests itself,
  after the caller's `publish()`, so every rollout in a batch used the latest weights:
  exactly on-policy.
- Overlap mode: before returning, `collect()` already requests the next rollouts with the
  weights published so far, so workers collect while the learner trains; each batch is then
  learned one update after the weights that collected it.
- Async mode: `slots_per_worker` slots per worker. Requests name no version, so each rollout
  acts with the newest weights when it starts; `publish()` hands the slots of the batch just
  learned back out, so the worker that finished first gets them first; a worker keeps filling
  its other slots while the learner trains, and waits when it has none. A batch is the first
  `batch_rollouts` slots reported: no barrier waits for the slowest worker.
In the first two modes the version each rollout uses is fixed by the parent, not by timing,
so a run with a fixed seed repeats exactly; in async mode it depends on timing, and so do
which rollouts share a batch.

Weights. Version v lives in buffer v % 2 of the shared weights, so a worker can read version v
while the parent writes v + 1. In the synchronous modes no read can overlap a write into its
buffer: a worker reads only after the request naming the version arrives, `publish()` never
runs during `collect()`, and it refuses to write the buffer that in-flight rollouts read (two
publishes with no collect between, in overlap mode). In async mode reads of the newest version
are checked and made again if a publish overlapped them (`SharedWeights`).

Failures during collection. An exception inside a rollout (an env's step or reset, or a NaN
or infinite observation or reward) travels as ("env_error", w, ChildError): the worker has not
reported the slot, so its partial data is never learned from, and it has already rebuilt its
envs with fresh seeds. A worker that dies (signal, out of memory, a crash in native code) is
seen at once through its sentinel; the parent drains its pipe (an error report sent just
before dying is raised as such) and starts a replacement with fresh seeds, which sends
"ready" like any worker. Either way the parent re-sends the worker's outstanding requests
(same slots, same weight versions, still readable in their buffers; a failed rollout's request
goes behind the ones the worker still holds) and the batch completes. Each
failure counts against `max_worker_restarts` within `restart_window_s` per worker; beyond it
the run stops with one sentence. With `nan_policy="error"` non-finite data stops the run at once.

Errors. Any other exception in a worker travels as ("error", w, ChildError) and is raised in
the parent by `ChildError.exception` as WorkerError ("in worker N" plus the traceback), or as
ConfigError when the user can fix it. During start-up every failure is fatal, since it comes
from the env or the options, not from bad luck. A worker that owes a rollout and has reported
nothing for `worker_timeout` (since it was handed work while idle, or since its last report) is stuck: during start-up that is fatal; during collection it is killed and
recovered like a worker that died, within the same restart budget. A fatal error closes the
pool before raising.

Watchdog. A waiting worker wakes every 0.5 s to check that its parent is still running; if
not, it exits, so killing the parent leaves no worker behind. A worker stuck inside an env is
not waiting: on Linux the kernel kills it when its parent exits (PR_SET_PDEATHSIG, set by
`prl.collection.child.die_with_parent`).

Central inference (`inference="central"`, `prl.collection.central`). Each worker also gets an
inference pipe, served by a process of its own (or, with `inference_server="thread"`, a thread of
the parent) that holds the policy on the learner's device; the worker then holds no policy and
its rollouts act through that server. The requests, slots, versions, failures and shutdown
above are unchanged: the pool names the version the server
acts with before it sends requests, a replacement worker's new pipe is attached to the server,
and an error in the server is raised by `collect()`.

Shutdown (`close()`, idempotent, also run by the context manager and at interpreter exit): stop
the inference server (central mode), send None to every live worker, join each for up to
`JOIN_S`, terminate and then kill what is left, close the pipes. The shared tensors are
unlinked segments held by file descriptor, and prl creates no named semaphore, so nothing in
/dev/shm outlives the processes, however they end.
"""

from __future__ import annotations

import time
import weakref
from multiprocessing.connection import Connection, wait
from typing import cast

import torch

from prl import seeding
from prl.collection.buffers import Batch, SharedWeights, TrajectoryBuffer
from prl.collection.central import InferenceProcess, InferenceServer
from prl.collection.child import ChildError, child_process, start_child
from prl.collection.failures import Failures, stuck
from prl.collection.processes import stop_processes, worker_context
from prl.collection.slots import SlotQueue
from prl.collection.worker import worker_main
from prl.config import Config
from prl.envs.factory import EnvFactory
from prl.errors import WorkerError
from prl.nn.policy import ActorCritic, build_policy

JOIN_S = 5.0
"""How long `close()` waits for a worker to exit by itself before terminating it."""


WAKE_S = 1.0
"""How often `collect()` wakes while it waits on workers, to check the inference server."""


def resolve_inference(config: Config, policy: ActorCritic) -> str:
    """worker or central: what `config.inference` means for this policy, on its device (the learner's).

    auto picks central for an encoder (CNN) policy on CUDA, where one batched forward pass on
    the GPU replaces a CNN on every worker's core.
    """
    if config.inference != "auto":
        return config.inference
    if policy.core is not None:
        return "worker"  # a recurrent policy's state lives with the actor in each worker
    on_cuda = policy.device.type == "cuda"
    return "central" if on_cuda and policy.encoder is not None else "worker"


def shutdown(processes: list, conns: list, server: InferenceServer | InferenceProcess | None = None) -> None:
    """Stop the inference server, then the workers in protocol order (`prl.collection.processes.stop_processes`); safe to call twice."""
    if server is not None:
        server.stop()
    stop_processes(processes, conns, JOIN_S)


class ActorPool:
    """Worker processes that collect rollouts into shared memory with the latest published weights.

    Use as a context manager (or call `close()`):

        with ActorPool(config, learner.policy) as pool:
            batch = pool.collect(learner.device)   # one rollout from every worker
            learner.update(batch)
            pool.publish(learner.policy)           # workers use it for their next rollout

    Args:
        config: the run's options (workers, envs_per_worker, rollout_steps, seed, ...).
        policy: the learner's policy; its architecture and env spec are rebuilt in each worker,
            and its current weights are published as version 0.
        seed_stream: mixed into the workers' seeds; a resumed run passes its update count so
            its envs do not replay the episodes the run started with.
    """

    def __init__(self, config: Config, policy: ActorCritic, seed_stream: int = 0):
        self.config = config
        self.spec = policy.spec
        self.inference = resolve_inference(config, policy)
        """worker or central (`prl.collection.central`): where this pool's rollouts compute their actions."""
        self._context = worker_context(config)
        self.buffer = TrajectoryBuffer(
            config.num_slots,
            config.rollout_steps,
            config.envs_per_worker,
            self.spec.obs_layout,
            self.spec.action_dim,
            central=self.inference == "central",
            state_size=policy.state_size,
            agents=bool(self.spec.agents),
        )
        self.weights = SharedWeights(policy)
        self._collecting = False
        self._inflight_version: int | None = None
        self._slots = SlotQueue(config)
        self._versions: dict[int, int | None] = {}
        """The weight version each requested slot's request names (None: the newest)."""
        self._heard = [time.monotonic()] * config.workers
        """When each worker last reported, or was handed work while it had none: its stuck clock."""
        self._starting: set[int] = set()
        """Replacement workers that have not reported ready: their requests wait, and go out in order at ready."""
        self.last_wait_s = 0.0
        """Seconds the last `collect()` spent waiting for workers (near zero when the learner is the bottleneck)."""
        self._failures = Failures(config, "worker")
        self.weights.publish(policy)
        self._seed_stream = seed_stream
        self._worker_args = (
            EnvFactory(config.env, config.env_kwargs),
            self.spec,
            policy.config,
            policy.obs_normalizer.enabled,
            policy.obs_normalizer.clip,
            self.buffer,
            self.weights,
            config.envs_per_worker,
            config.seed,
        )
        self._processes: list = []
        self._conns: list = []
        self._server: InferenceServer | InferenceProcess | None = None
        if self.inference == "central":
            twin_args = (self.spec, policy.config, policy.obs_normalizer.enabled, policy.obs_normalizer.clip)
            device = policy.device
            if config.inference_server == "process":
                self._server = InferenceProcess(
                    twin_args, self.weights, self.buffer, device, self._context, config.learner_threads
                )
            else:
                self._server = InferenceServer(build_policy(*twin_args), self.weights, self.buffer, device)
            self._server.start()
        self._finalizer = weakref.finalize(self, shutdown, self._processes, self._conns, self._server)
        try:
            for index in range(config.workers):
                process, conn = self._spawn(index, seeding.first_incarnation(seed_stream))
                self._processes.append(process)
                self._conns.append(conn)
            self._await("start")
        except BaseException:
            self.close()
            raise

    def _spawn(self, index: int, incarnation: tuple):
        """Start worker `index` (its pipe and process) in its `incarnation`; returns (process, parent end of the pipe)."""
        parent_conn, child_conn = self._context.Pipe(duplex=True)
        inference_parent = inference_child = None
        if self._server is not None:
            inference_parent, inference_child = self._context.Pipe(duplex=True)
        process = child_process(
            self._context,
            f"prl-worker-{index}",
            worker_main,
            child_conn,
            index,
            *self._worker_args,
            incarnation,
            inference_child,
            index=index,
            seed=seeding.process_seed(self.config.seed, index, incarnation),
        )
        start_child(process, child_conn)
        if self._server is not None:
            assert inference_parent is not None and inference_child is not None  # made above for the server
            inference_child.close()
            self._server.attach(index, inference_parent)
        return process, parent_conn

    @property
    def version(self) -> int:
        """Version of the latest published weights (0 = the weights the pool started with)."""
        return self.weights.current_version()

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers."""
        return [process.pid for process in self._processes]

    @property
    def server_pid(self) -> int | None:
        """Process id of the inference server's own process (`inference_server="process"`), else None."""
        return getattr(self._server, "pid", None)

    def publish(self, policy: torch.nn.Module) -> int:
        """Make `policy`'s weights the ones workers use from their next rollout request on; returns the new version."""
        if self._collecting:
            raise RuntimeError("publish() was called while collect() is running; call it between collections.")
        if self._inflight_version is not None and (self.version + 1) % 2 == self._inflight_version % 2:
            raise RuntimeError(
                "publish() was called twice while rollouts run with older weights (overlap mode); call collect() in between."
            )
        version = self.weights.publish(policy)
        if self._slots.asynchronous:
            self._request_rollouts()  # the slots of the batch just learned, with these weights
        return version

    def collect(self, device: torch.device | str = "cpu") -> Batch:
        """One rollout from every worker, as one batch on `device`.

        Synchronous mode: the rollouts start now, with the latest published weights. Overlap
        mode: they were started by the previous call, and the next ones start before this
        returns, with the weights published by then (so they are one update old when learned).
        Async mode: the first `batch_rollouts` rollouts to finish, whichever workers filled them
        (`prl.collection.slots`).
        """
        if not self._processes:
            raise RuntimeError("the pool is closed; create a new ActorPool to collect again.")
        self._collecting = True
        try:
            if self._inflight_version is None:
                self._request_rollouts()  # async: any slot still free (publish() hands them out)
            waiting = time.perf_counter()
            self._await("rollout")
            self.last_wait_s = time.perf_counter() - waiting
            self._inflight_version = None
            batch = self.buffer.gather(self._slots.take(), device)  # a copy: the slots are free again
            if self.config.mode == "overlap":
                self._request_rollouts()
        except BaseException:
            self.close()
            raise
        finally:
            self._collecting = False
        return batch

    def _request_rollouts(self) -> None:
        """Send the slots the queue hands out, each with the weight version to act with (async: the newest)."""
        version = None if self._slots.asynchronous else self.version
        if self._server is not None:
            self._server.use_version(version)
        for worker, slot in self._slots.hand_out():
            if len(self._slots.outstanding(worker)) == 1:
                self._heard[worker] = time.monotonic()  # idle until now: its stuck clock starts
            self._versions[slot] = version
            self._send_request(worker, slot)
        if not self._slots.asynchronous:
            self._inflight_version = version

    def _send_request(self, worker: int, slot: int) -> None:
        """Ask `worker` to fill `slot`; a dead worker's pipe is left to its sentinel, which replaces it."""
        if worker in self._starting:
            return  # `_resend` sends it, after the ones handed out before it
        try:
            self._conns[worker].send((slot, self._versions[slot]))
        except (BrokenPipeError, ConnectionResetError, EOFError):
            pass

    def _resend(self, worker: int) -> None:
        """Send a replacement `worker` every request its predecessor still owed, in order."""
        self._starting.discard(worker)
        self._heard[worker] = time.monotonic()
        for slot in self._slots.outstanding(worker):
            self._send_request(worker, slot)

    @property
    def restarts(self) -> int:
        """Worker failures recovered from so far (env errors and replaced processes)."""
        return self._failures.restarts

    def _recover(self, worker: int, what: str) -> None:
        """Count a failure of `worker`, and within the restart budget replace it; its requests are
        re-sent when the replacement reports ready."""
        self._failures.count(worker, what)
        self._processes[worker].join(timeout=1.0)
        self._conns[worker].close()
        incarnation = seeding.replacement(self._seed_stream, self.restarts)
        self._processes[worker], self._conns[worker] = self._spawn(worker, incarnation)
        self._starting.add(worker)
        self._heard[worker] = time.monotonic()  # its start-up counts as progress

    def _await(self, what: str) -> None:
        """Wait until every worker has sent "ready" (`what` = "start"), or the slot queue has a batch ("rollout").

        During collection a failed worker is recovered (see `_recover`) and its requests re-sent;
        during start-up any failure raises, since it comes from the env or the options. A worker
        is stuck when it owes a message and has sent none for `worker_timeout`.
        """
        collecting = what == "rollout"
        ready_workers: set[int] = set()
        if not collecting:
            self._heard = [time.monotonic()] * len(self._processes)

        def pending() -> list[int]:
            if collecting:
                return [w for w in range(len(self._processes)) if self._slots.busy(w)]
            return [w for w in range(len(self._processes)) if w not in ready_workers]

        while True:
            waiting = pending()
            now = time.monotonic()
            # Checked even when a batch is ready: in async mode the others' rollouts can make every
            # batch while one worker hangs. A report waiting in the pipe (the learner was busy
            # elsewhere, say evaluating) is not a silence.
            overdue = [
                w for w in waiting if now - self._heard[w] >= self.config.worker_timeout and not self._has_message(w)
            ]
            if overdue and not collecting:
                raise WorkerError(
                    f"worker(s) {sorted(overdue)} sent no {what} within {self.config.worker_timeout:.0f} s; "
                    "raise worker_timeout if the env is slow."
                )
            for worker in overdue:
                self._kill_stuck(worker)
            if overdue:
                continue
            if self._slots.batch_ready() if collecting else len(ready_workers) == len(self._processes):
                return
            if not waiting:
                raise RuntimeError("collect() has no rollout to wait for; publish() hands the slots back out.")
            handles = {id(self._conns[w]): w for w in waiting}
            sentinels = {self._processes[w].sentinel: w for w in waiting}
            first_due = min(self._heard[w] for w in waiting) + self.config.worker_timeout
            ready = wait(
                [self._conns[w] for w in waiting] + list(sentinels), timeout=min(WAKE_S, max(0.0, first_due - now))
            )
            self._check_server()
            for item in ready:
                if isinstance(item, int):
                    worker = sentinels[item]
                    for message in self._drain(worker):  # an error report sent just before dying says why
                        if message[0] == "error":
                            self._raise_worker_error(worker, message[2])
                    if not collecting:
                        raise self._death(worker, what)
                    self._processes[worker].join(timeout=1.0)
                    self._recover(worker, f"died (exit code {self._processes[worker].exitcode})")
                    continue
                sender = handles.get(id(item))
                if sender is None:
                    continue  # the pipe of a worker replaced earlier in this loop
                worker = sender
                try:
                    kind, _, payload = cast(Connection, item).recv()  # not a sentinel: a worker's pipe
                except (EOFError, OSError):
                    if not collecting:
                        raise self._death(worker, what) from None
                    continue  # its sentinel reports the death
                self._heard[worker] = time.monotonic()
                if kind == "error":
                    self._raise_worker_error(worker, payload)
                elif kind == "env_error":
                    self._env_failed(worker, payload)
                elif kind == "ready":
                    if collecting:
                        self._resend(worker)  # a replacement
                    else:
                        ready_workers.add(worker)
                elif kind == "slot" and collecting:
                    self._slots.reported(worker, payload)

    def _has_message(self, worker: int) -> bool:
        """Whether `worker`'s pipe holds a message not read yet (a closed pipe counts: its sentinel says more)."""
        try:
            return self._conns[worker].poll()
        except (EOFError, OSError):
            return True

    def _kill_stuck(self, worker: int) -> None:
        """Kill a worker that sent nothing within worker_timeout (stuck in an env) and recover it as a dead one."""
        self._processes[worker].kill()
        self._processes[worker].join(timeout=JOIN_S)
        self._drain(worker)
        self._recover(worker, stuck(self.config.worker_timeout))

    def _check_server(self) -> None:
        """Raise the inference server's error, if it stopped with one."""
        if self._server is not None and self._server.error is not None:
            raise self._server.error.exception("the inference server")

    def _drain(self, worker: int) -> list:
        """Every message left in a dead worker's pipe."""
        messages = []
        try:
            while self._conns[worker].poll():
                messages.append(self._conns[worker].recv())
        except (EOFError, OSError):
            pass
        return messages

    def _env_failed(self, worker: int, error: ChildError) -> None:
        """An env raised (or returned non-finite data) inside `worker`, which rebuilt its envs."""
        self._failures.env_error(worker, error)
        self._send_request(worker, self._slots.failed(worker))

    def _death(self, worker: int, what: str) -> WorkerError:
        self._processes[worker].join(timeout=1.0)
        code = self._processes[worker].exitcode
        return WorkerError(f"worker {worker} died during {what} (exit code {code}).")

    def _raise_worker_error(self, worker: int, error: ChildError) -> None:
        if error.type_name == "InferenceGone" and self._server is not None:
            self._server.await_error(JOIN_S)  # the worker may see its pipe close before the server's report
        self._check_server()  # a worker whose inference pipe closed reports the server's failure, not its own
        raise error.exception(f"worker {worker}")

    def close(self) -> None:
        """Stop every worker and release the pipes; no process is left running. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> ActorPool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
