"""Central inference: one policy on the learner's device acts for every worker's envs.

In `inference="central"` mode the workers only step envs. Each worker splits its envs into two
groups and steps one while the other's actions are computed (double-buffered sampling). The
protocol below adds a second pipe per worker to the one written in `prl.pool`.

Inference protocol
==================
Channel. Each worker has an inference pipe to the `InferenceServer`, a thread of the parent
process. Worker -> server: ("act", slot, t, group): "row t of my slot holds the observations of
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
version, as in worker mode, and a synchronous run stays exactly on-policy.

Randomness. Before each "act", the worker writes the randomness of its group's actions into
the slot's `noise` row, drawn from its own seeded generator (uniforms for categorical actions,
standard normals for Gaussian ones); the server samples with it. So an action depends only on
its env's observation, its noise and the weights, not on which other requests shared its batch,
and a seeded run repeats its draws. What batching can still change is the arithmetic of a
forward pass over a different number of rows, in the last bits of a float: it flips a sampled
action only when the noise falls that close to a boundary between two actions.

Batching. The server waits on every pipe at once, takes every message that has arrived, and
serves them as one batch: one gather from the shared slots, one forward pass on the device,
one scatter back. It never waits for a particular worker, so a hung or dead worker stalls only
itself. A closed pipe (the worker died) is dropped; the pool's replacement brings a new pipe
(`attach`).

Failures. An exception in the server is kept in `error`; the server then closes every pipe, so
that each worker waiting for a reply fails at once, and the pool raises the server's error.
`stop()` ends the thread within `POLL_S` and closes the pipes; it leaves no thread behind.
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection, wait
from typing import Optional

import torch

from prl.buffers import SharedWeights, TrajectoryBuffer
from prl.observations import Observations, map_obs
from prl.policy import ActorCritic

POLL_S = 0.05
"""How often the server's wait wakes to notice `stop()` and newly attached pipes."""


def env_groups(envs_per_worker: int) -> list[range]:
    """The two groups of a worker's envs that take turns (one group when the worker has one env)."""
    half = (envs_per_worker + 1) // 2
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
    """

    def __init__(self, policy: ActorCritic, weights: SharedWeights, buffer: TrajectoryBuffer, device):
        self.device = torch.device(device)
        self.policy = policy.to(self.device).eval()
        self.weights = weights
        self.buffer = buffer
        self.groups = env_groups(buffer.envs_per_worker)
        self.error: Optional[BaseException] = None
        """The exception that stopped the server, if one did."""
        self.served = 0
        """Batches served so far."""
        self._held = -1
        self._wanted = 0
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
            if old is not None and old is not conn:
                self._retired.append(old)  # closed by the server's thread, which may be waiting on it now

    def use_version(self, version: int) -> None:
        """Act with weight `version` from the next batch on; called only while no rollout runs."""
        self._wanted = version

    def stop(self) -> None:
        """End the thread and close every pipe; safe to call more than once."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._close_pipes()

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
                for conn in ready:
                    worker, _ = by_conn[id(conn)]
                    try:
                        while conn.poll():
                            requests.append((worker, conn.recv()))
                    except (EOFError, OSError):
                        self._drop(worker, conn)
                if requests:
                    self._serve(requests, {worker: conn for worker, conn in by_conn.values()})
        except BaseException as error:  # kept for the pool to raise; the workers see their pipes close
            self.error = error
            self._close_pipes()

    def _drop(self, worker: int, conn: Connection) -> None:
        """Forget a closed pipe (its worker died); a replacement attaches a new one."""
        with self._lock:
            if self._conns.get(worker) is conn:
                del self._conns[worker]
        conn.close()

    def _serve(self, requests: list, conns: dict) -> None:
        """One batch: the values of every final observation, then every act, then the replies."""
        if self._held != self._wanted:
            self._held = self.weights.load_into(self.policy, self._held, self._wanted)
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
        self.served += 1

    def _final_values(self, finals: list) -> None:
        workers, envs, slots, steps = [], [], [], []
        for worker, (_, slot, t, indices) in finals:
            workers += [worker] * len(indices)
            envs += list(indices)
            slots += [slot] * len(indices)
            steps += [t] * len(indices)
        w, e = torch.tensor(workers), torch.tensor(envs)
        obs = map_obs(lambda tensor: tensor[w, e], self.buffer.final_obs)
        values = self.policy.get_value(self._to_device(obs))
        self.buffer.final_values[torch.tensor(slots), torch.tensor(steps), e] = values.cpu()

    def _act(self, acts: list) -> None:
        slots, steps, envs = [], [], []
        for _, (_, slot, t, group) in acts:
            indices = self.groups[group]
            slots += [slot] * len(indices)
            steps += [t] * len(indices)
            envs += list(indices)
        s, t, e = torch.tensor(slots), torch.tensor(steps), torch.tensor(envs)
        obs = map_obs(lambda tensor: tensor[s, t, e], self.buffer.obs)
        noise = self.buffer.noise[s, t.clamp(max=self.buffer.rollout_steps - 1), e]  # row T: values only
        actions, logprobs, _, values = self.policy.get_action_and_value(
            self._to_device(obs), noise=noise.to(self.device)
        )
        self.buffer.values[s, t, e] = values.cpu()
        acting = t < self.buffer.rollout_steps  # row T bootstraps: values only
        s, t, e = s[acting], t[acting], e[acting]
        self.buffer.actions[s, t, e] = actions.cpu()[acting]
        self.buffer.logprobs[s, t, e] = logprobs.cpu()[acting]

    def _to_device(self, obs: Observations) -> Observations:
        if self.device.type == "cpu":
            return obs
        return map_obs(lambda tensor: tensor.pin_memory().to(self.device, non_blocking=True), obs)


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
