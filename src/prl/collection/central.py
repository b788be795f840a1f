"""Central inference: one policy on the learner's device acts for every worker's envs.

In `inference="central"` mode the workers only step envs. Each worker splits its envs into two
groups and steps one while the other's actions are computed (double-buffered sampling). The
protocol below adds a second pipe per worker to the one written in `prl.collection.pool`.

Inference protocol
==================
Channel. Each worker has an inference pipe to the `InferenceServer` (a process of its own by
default, see Hosting below). Worker -> server: ("act", slot, t, group): "row t of my slot holds the observations of
this group's envs; write their actions, log-probs and values into the slot", or
("final", slot, t, envs): "the final observations of these truncated envs are in my row of
`final_obs`; write their values into final_values[slot, t]". Server -> worker: (t, group) once
that group's row t is written. "final" gets no reply. Observations, actions and values never
travel through pipes: only these indices do.

Order. The server handles each worker's messages in the order sent, finals before acts in one
batch, and replies in that order. So a worker that receives the reply to ("act", slot, t + 1,
g) knows that every earlier "final" of group g was served, and may overwrite its `final_obs`
rows again. Row T (the observation after the last step) gets values only, for bootstrapping.

Weights. The server acts with the version the pool names in `use_version`, which the pool sets
before it sends rollout requests, and never during a rollout: every rollout acts with one
version, as in worker mode, and a synchronous run stays exactly on-policy. In async mode the
pool names no version (`use_version(None)`): the server loads the newest one before each batch
(`SharedWeights.load_latest`), so one rollout's steps may act with several. Either way the
server writes the version of every step it acts for into the slot's `versions`.

Randomness. Before each "act", the worker writes the randomness of its group's actions into
the slot's `noise` row, drawn from its own seeded generator (uniforms for categorical actions,
standard normals for Gaussian ones); the server samples with it. So an action depends only on
its env's observation, its noise and the weights, not on which other requests shared its batch,
and a seeded run repeats its draws. What batching can still change is the arithmetic of a
forward pass over a different number of rows, in the last bits of a float: it flips a sampled
action only when the noise falls that close to a boundary between two actions.

Memory. For a recurrent policy (`prl.nn.recurrent`) the server keeps every env's state, per
worker, on its device. Before each "act" of rows 0 to T - 1 the worker writes its group's
episode-start flags into the slot's `episode_starts` row; the server resets a flagged env's
state, acts, and keeps the new state. At row 0 it first writes each env's state into the
slot's `initial_states`, where the learner's replay starts from. Row T's values and a final
observation's value are read from the state without keeping what they compute (row T's flags
are the episode ends of row T - 1). A replacement worker's envs start from zeros: `attach`
forgets the old worker's states.

Batching. The server waits on every pipe at once, takes every message that has arrived, and
serves them as one batch: one gather from the shared slots, one forward pass on the device,
one scatter back. It never waits for a particular worker, so a hung or dead worker stalls only
itself. A closed pipe (the worker died) is dropped; the pool's replacement brings a new pipe
(`attach`).

Failures. An exception in the server is kept in `error` (a `prl.collection.child.ChildError`);
the server then closes every pipe, so that each worker waiting for a reply fails at once, and
the pool raises the server's error ("... in the inference server").
`stop()` ends the thread within `POLL_S` and closes the pipes; it leaves no thread behind.

Hosting (`inference_server`). By default (`process`) the server runs in a process of its own
(`InferenceProcess`), with its own copy of the policy on the learner's device, so that its
Python work does not share the learner's interpreter lock; with `thread` the same server is a
thread of the learner's process. The pool keeps one control pipe to it. Start: the process builds the policy,
starts the server and sends ("ready",) within `START_S`. `attach` sends ("attach", worker)
followed by the pipe's file descriptor (`multiprocessing.reduction.send_handle`). The version
to act with lives in a shared tensor that `use_version` writes, read at each batch as the
thread reads it. The process runs `prl.collection.child.child_main` with `serve_in_process` as
its body, and sends ("error", None, ChildError) when its server fails, and exits; `error`
reports that, or the process's death. `stop()` sends None, joins it, then terminates it. It
watches the learner's process and exits if that ends.
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import recv_handle, send_handle
from typing import Callable, Optional, cast

import torch

from prl.collection.buffers import SharedWeights, TrajectoryBuffer
from prl.collection.child import Channel, ChildError, child_process, start_child
from prl.collection.processes import stop_processes
from prl.envs.observations import Observations, map_obs
from prl.errors import WorkerError
from prl.nn.policy import ActorCritic, build_policy, place_policy

POLL_S = 0.05
"""How often the server's wait wakes to notice `stop()` and newly attached pipes."""

START_S = 120.0
"""How long a server process may take to build its policy and start serving."""

NEWEST = -2
"""The version `use_version(None)` stands for: whichever is newest at each batch (async mode)."""

STOP_S = 5.0
"""How long `stop()` waits for the server (thread or process) to end before forcing it."""


def env_groups(envs_per_worker: int, agents: int = 0) -> list[range]:
    """The two groups of a worker's envs that take turns (one group when the worker has one env).

    With a PettingZoo env's `agents` rows per env, the groups hold whole envs: its agents step together.
    """
    block = max(1, agents)
    half = (envs_per_worker // block + 1) // 2 * block
    groups = [range(0, half), range(half, envs_per_worker)]
    return [group for group in groups if len(group)]


class InferenceServer:
    """A thread that acts for every worker with one copy of the policy on `device` (see the protocol above).

    Args:
        policy: a policy of the run's architecture; the server acts with it (moved to `device`)
            and loads each published version into it.
        weights: the pool's shared weights.
        buffer: the pool's trajectory slots; also holds `final_obs`, one row per worker env.
        device: where inference runs (the learner's device).
        wanted: a one-element int64 tensor holding the version to act with (`use_version` writes
            it); a server hosted in another process shares it with the pool.
        on_error: called with the error that stops the server (a `ChildError`), before it closes the pipes.
    """

    def __init__(
        self,
        policy: ActorCritic,
        weights: SharedWeights,
        buffer: TrajectoryBuffer,
        device,
        wanted: Optional[torch.Tensor] = None,
        on_error: Optional[Callable[[ChildError], None]] = None,
    ):
        self.device = torch.device(device)
        self.policy = place_policy(policy, self.device).eval()
        self.weights = weights
        self.buffer = buffer
        self.groups = env_groups(buffer.envs_per_worker, policy.spec.agents)
        state_size = self.policy.state_size if buffer.episode_starts is not None else 0
        self._states = torch.zeros(0, buffer.envs_per_worker, state_size, device=self.device)
        """[workers seen, envs_per_worker, state_size]: each env's recurrent state, grown as workers attach."""
        self._fresh: set[int] = set()
        self.error: Optional[ChildError] = None
        """The error that stopped the server, if one did."""
        self._held = -1
        self._wanted = torch.zeros(1, dtype=torch.int64) if wanted is None else wanted
        """The version to act with, or NEWEST (`use_version`)."""
        self._on_error = on_error
        self._conns: dict[int, Connection] = {}
        self._retired: list[Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prl-inference", daemon=True)

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def attach(self, worker: int, conn: Connection) -> None:
        """Serve `worker` through `conn` from now on (a replacement worker's pipe replaces the old one)."""
        with self._lock:
            old = self._conns.get(worker)
            self._conns[worker] = conn
            self._fresh.add(worker)
            if old is not None and old is not conn:
                self._retired.append(old)  # closed by the server's thread, which may be waiting on it now

    def use_version(self, version: Optional[int]) -> None:
        """Act with weight `version` from the next batch on, called only while no rollout runs; None: always the newest."""
        self._wanted[0] = NEWEST if version is None else version

    def await_error(self, timeout: float) -> Optional[ChildError]:
        """The error that stopped the server, waiting up to `timeout` for the thread to end (a worker saw its pipe close)."""
        self._join(timeout)
        return self.error

    def stop(self) -> None:
        """End the thread and close every pipe; safe to call more than once."""
        self._stop.set()
        self._join(STOP_S)
        self._close_pipes()

    def _join(self, timeout: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    def _close_pipes(self) -> None:
        with self._lock:
            conns = list(self._conns.values()) + self._retired
            self._conns.clear()
            self._retired = []
        for conn in conns:
            conn.close()

    def _run(self) -> None:
        try:
            torch.set_grad_enabled(False)
            while not self._stop.is_set():
                with self._lock:
                    by_conn = {id(conn): (worker, conn) for worker, conn in self._conns.items()}
                    retired, self._retired = self._retired, []
                for conn in retired:
                    conn.close()
                ready = wait([conn for _, conn in by_conn.values()], timeout=POLL_S) if by_conn else []
                if not by_conn:
                    self._stop.wait(POLL_S)
                requests = []
                for conn in cast(list[Connection], ready):  # wait returns some of the pipes it was given
                    worker, _ = by_conn[id(conn)]
                    try:
                        while conn.poll():
                            requests.append((worker, conn.recv()))
                    except (EOFError, OSError):
                        self._drop(worker, conn)
                if requests:
                    self._serve(requests, {worker: conn for worker, conn in by_conn.values()})
        except BaseException as error:  # kept for the pool to raise; the workers see their pipes close
            self.error = ChildError.of(error)
            if self._on_error is not None:
                self._on_error(self.error)
            self._close_pipes()

    def _drop(self, worker: int, conn: Connection) -> None:
        """Forget a closed pipe (its worker died); a replacement attaches a new one."""
        with self._lock:
            if self._conns.get(worker) is conn:
                del self._conns[worker]
        conn.close()

    def _serve(self, requests: list, conns: dict) -> None:
        """One batch: the values of every final observation, then every act, then the replies."""
        wanted = int(self._wanted[0])
        if wanted == NEWEST:
            self._held = self.weights.load_latest(self.policy, self._held)
        elif self._held != wanted:
            self._held = self.weights.load_into(self.policy, self._held, wanted)
        if self._states.shape[-1]:
            self._track_states(max(worker for worker, _ in requests))
        finals = [(worker, message) for worker, message in requests if message[0] == "final"]
        acts = [(worker, message) for worker, message in requests if message[0] == "act"]
        if finals:
            self._final_values(finals)
        if acts:
            self._act(acts)
        for worker, (_, _, t, group) in acts:
            conn = conns[worker]
            try:
                conn.send((t, group))
            except (OSError, EOFError, BrokenPipeError):
                self._drop(worker, conn)

    def _track_states(self, last_worker: int) -> None:
        """Give every worker up to `last_worker` a state row, and start attached workers' envs from zeros."""
        with self._lock:
            fresh, self._fresh = self._fresh, set()
        if self._states.shape[0] <= last_worker:
            grow = last_worker + 1 - self._states.shape[0]
            self._states = torch.cat([self._states, self._states.new_zeros(grow, *self._states.shape[1:])])
        for worker in fresh:
            if worker < self._states.shape[0]:
                self._states[worker] = 0.0

    def _final_values(self, finals: list) -> None:
        workers, envs, slots, steps = [], [], [], []
        for worker, (_, slot, t, indices) in finals:
            workers += [worker] * len(indices)
            envs += list(indices)
            slots += [slot] * len(indices)
            steps += [t] * len(indices)
        w, e = torch.tensor(workers), torch.tensor(envs)
        assert self.buffer.final_obs is not None  # a central buffer has final_obs and noise
        obs = self._to_device(map_obs(lambda tensor: tensor[w, e], self.buffer.final_obs))
        if self._states.shape[-1]:
            state = self._states[w.to(self.device), e.to(self.device)]
            values = self.policy.value_after(obs, state, torch.zeros(len(e), dtype=torch.bool, device=self.device))
        else:
            values = self.policy.get_value(obs)
        self.buffer.final_values[torch.tensor(slots), torch.tensor(steps), e] = values.cpu()

    def _act(self, acts: list) -> None:
        workers, slots, steps, envs = [], [], [], []
        for worker, (_, slot, t, group) in acts:
            indices = self.groups[group]
            workers += [worker] * len(indices)
            slots += [slot] * len(indices)
            steps += [t] * len(indices)
            envs += list(indices)
        s, t, e = torch.tensor(slots), torch.tensor(steps), torch.tensor(envs)
        obs = self._to_device(map_obs(lambda tensor: tensor[s, t, e], self.buffer.obs))
        assert self.buffer.noise is not None  # a central buffer has final_obs and noise
        row = t.clamp(max=self.buffer.rollout_steps - 1)  # row T bootstraps: values only, read with row T - 1
        noise = self.buffer.noise[s, row, e].to(self.device)
        acting = t < self.buffer.rollout_steps
        if self._states.shape[-1]:
            actions, logprobs, values = self._act_with_states(torch.tensor(workers), s, t, row, e, acting, obs, noise)
        else:
            actions, logprobs, _, values = self.policy.get_action_and_value(obs, noise=noise)
        self.buffer.values[s, t, e] = values.cpu()
        s, t, e = s[acting], t[acting], e[acting]
        self.buffer.actions[s, t, e] = actions.cpu()[acting]
        self.buffer.logprobs[s, t, e] = logprobs.cpu()[acting]
        self.buffer.versions[s, t, e] = self._held

    def _act_with_states(self, w, s, t, row, e, acting, obs: Observations, noise: torch.Tensor):
        """A recurrent policy's step for these rows (see Memory above): actions, log-probs and values.

        `row` is `t` with row T read as row T - 1, whose episode ends are row T's starts."""
        buffer = self.buffer
        assert buffer.episode_starts is not None and buffer.initial_states is not None  # a recurrent buffer
        ended = buffer.terminated[s, row, e] | buffer.truncated[s, row, e]
        starts = torch.where(acting, buffer.episode_starts[s, row, e], ended)
        wd, ed = w.to(self.device), e.to(self.device)
        state = self._states[wd, ed]
        first = t == 0
        if first.any():
            buffer.initial_states[s[first], e[first]] = state[first.to(self.device)].cpu()
        actions, logprobs, values, new_state = self.policy.step(obs, state, starts.to(self.device), noise=noise)
        keep = acting.to(self.device)
        self._states[wd[keep], ed[keep]] = new_state[keep]
        return actions, logprobs, values

    def _to_device(self, obs: Observations) -> Observations:
        if self.device.type == "cpu":
            return obs
        return map_obs(lambda tensor: tensor.pin_memory().to(self.device, non_blocking=True), obs)


class InferenceProcess:
    """An `InferenceServer` hosted in a process of its own, with the thread's interface (see Hosting above).

    Args:
        policy_args: what `prl.nn.policy.build_policy` builds the server's copy of the policy from.
        weights: the pool's shared weights.
        buffer: the pool's trajectory slots.
        device: where inference runs (the learner's device).
        context: the multiprocessing context the pool starts its workers with.
        threads: torch threads of the server process, as many as the learner's (a thread server
            shares them); torch's default, one per core, would spin against the workers.
    """

    def __init__(
        self, policy_args: tuple, weights: SharedWeights, buffer: TrajectoryBuffer, device, context, threads: int = 1
    ):
        self._wanted = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._control, child = context.Pipe(duplex=True)
        self._process = child_process(
            context,
            "prl-inference",
            serve_in_process,
            child,
            policy_args,
            weights,
            buffer,
            str(device),
            self._wanted,
            threads=threads,
        )
        self._child = child
        self._error: Optional[ChildError] = None
        self._stopped = False

    def start(self) -> None:
        """Start the process and wait until it serves; raises what stopped it from starting."""
        start_child(self._process, self._child)
        if self._control.poll(START_S) or not self._process.is_alive():
            report = self._read_report()
            if report == ("ready",):
                return
            error = self.await_error(STOP_S)  # it closed its pipe: its report, or its end, follows
        else:
            error = None
        error = error or ChildError("TimeoutError", f"it did not answer within {START_S:.0f} s")
        self.stop()
        if error.type_name == "ConfigError":
            raise error.exception("the inference server")
        raise WorkerError(
            f"the inference process did not start: {error.type_name}: {error.message}\n{error.trace}".rstrip()
        )

    def _read_report(self) -> Optional[tuple]:
        """The next message from the process, if one is waiting; an error report is kept in `error`."""
        try:
            if not self._control.poll():
                return None
            message = self._control.recv()
        except (EOFError, OSError):
            return None
        if message[0] == "error" and self._error is None:
            self._error = message[2]
        return message

    def attach(self, worker: int, conn: Connection) -> None:
        """Serve `worker` through `conn` from now on; the pool's end of `conn` is handed over and closed here."""
        try:
            self._control.send(("attach", worker))
            send_handle(self._control, conn.fileno(), self._process.pid)
        except (OSError, EOFError):
            pass  # the process ended: `error` says why
        finally:
            conn.close()

    def use_version(self, version: Optional[int]) -> None:
        """Act with weight `version` from the next batch on, called only while no rollout runs; None: always the newest."""
        self._wanted[0] = NEWEST if version is None else version

    @property
    def pid(self) -> Optional[int]:
        """The server process's id (None before `start()`)."""
        return self._process.pid

    @property
    def error(self) -> Optional[ChildError]:
        """What stopped the server process (its error report, or its death), if something did; None once stopped."""
        if self._error is None and self._process.pid is not None and not self._stopped:
            ended = not self._process.is_alive()  # first: a report sent just before the end is then in the pipe
            self._read_report()
            if self._error is None and ended:
                self._process.join(timeout=STOP_S)
                self._error = ChildError(
                    "RuntimeError", f"the inference process ended (exit code {self._process.exitcode})"
                )
        return self._error

    def await_error(self, timeout: float) -> Optional[ChildError]:
        """The error that stopped the server, waiting up to `timeout` for the process to end (a worker saw its pipe close).

        A failing server reports and then exits, and a killed one closes its pipes a moment
        before the system counts it as ended, so the end is what to wait for.
        """
        if self.error is None and self._process.pid is not None:
            self._process.join(timeout=timeout)
        return self.error

    def stop(self) -> None:
        """End the process (None, join, terminate, kill); safe to call more than once."""
        self._stopped = True
        stop_processes([self._process], [self._control], STOP_S)


def serve_in_process(
    channel: Channel,
    policy_args: tuple,
    weights: SharedWeights,
    buffer: TrajectoryBuffer,
    device: str,
    wanted: torch.Tensor,
) -> None:
    """The body of a server process, run by `prl.collection.child.child_main`: build the policy, serve,
    and take attachments until told to stop."""
    server = None

    def report(error: ChildError) -> None:
        try:
            channel.send(("error", None, error))
        except (OSError, EOFError):
            pass  # the pool is gone

    try:
        server = InferenceServer(build_policy(*policy_args), weights, buffer, device, wanted, on_error=report)
        server.start()
        channel.send(("ready",))
        control = channel.conn
        while channel.parent.is_running() and server.error is None:
            try:
                if not control.poll(POLL_S):
                    continue
                message = control.recv()
                if message is None:
                    break
                worker_conn = Connection(recv_handle(control))
            except (EOFError, OSError):
                break  # the pool's end closed: it is gone
            server.attach(message[1], worker_conn)
    finally:
        if server is not None:
            server.stop()


class InferenceGone(Exception):
    """The inference server's pipe closed: the server stopped (its error is raised by the pool)."""


class InferenceClient:
    """A worker's end of the inference pipe: requests, replies, and the count of replies still owed."""

    def __init__(self, conn: Connection, poll):
        self.conn = conn
        self.outstanding = 0
        self._poll = poll
        """Called with the pipe while a reply is awaited; returns when it is readable (and checks the parent)."""

    def act(self, slot: int, t: int, group: int) -> None:
        """Ask for the actions (or at t = T, the values) of `group`'s envs at row `t`."""
        self._send(("act", slot, t, group))
        self.outstanding += 1

    def final(self, slot: int, t: int, envs: list[int]) -> None:
        """Ask for the values of these envs' final observations (already written to `final_obs`)."""
        self._send(("final", slot, t, tuple(envs)))

    def _send(self, message: tuple) -> None:
        try:
            self.conn.send(message)
        except (EOFError, OSError) as error:
            raise InferenceGone("the inference server closed its pipe") from error

    def reply(self) -> tuple[int, int]:
        """Wait for the next reply: (t, group) of the request it answers."""
        try:
            self._poll(self.conn)
            reply = self.conn.recv()
        except (EOFError, OSError) as error:
            raise InferenceGone("the inference server closed its pipe") from error
        self.outstanding -= 1
        return reply

    def drain(self) -> None:
        """Receive every reply still owed, so that the next rollout starts with a clean pipe."""
        while self.outstanding:
            self.reply()
