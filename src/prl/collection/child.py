"""The one skeleton every child process of prl runs: workers, the inference server process and the Ray driver.

Modelled on PyTorch's DataLoader worker loop. `child_main` is each child's entry point: it
ignores Ctrl-C (the parent's to handle), dies with its parent (`die_with_parent`), sets the thread count, seeds the process's global
generators from its named stream (`prl.seeding`), watches the parent, and runs the child's
body. An exception in the body travels to the parent as data, a `ChildError` in an
("error", index, ChildError) message, and the parent raises it with `ChildError.exception`,
which names where it came from ("in worker 3", "in the inference server", "in the Ray
driver"). A body whose parent has gone raises `ParentGone` from any wait and exits quietly.
The parent's half is `child_process` and `start_child`, which every pool uses to start one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import sys
import threading
import traceback
from multiprocessing import forkserver
from typing import Any, Callable, Optional

import numpy as np
import psutil
import torch
from threadpoolctl import threadpool_limits

from prl.collection.processes import main_script_hidden, sigint_ignored
from prl.errors import ConfigError, WorkerError

POLL_S = 0.5
"""How often a waiting child wakes to check that its parent is still alive."""


class ParentGone(Exception):
    """The process that started this child has exited."""


class ChildError:
    """An exception raised in a child process, as data that pickles: its type's name, message and traceback.

    prl's own errors keep their type in the parent: a `ConfigError` is a cause the user can fix
    and its message says how, and a `WorkerError` already names where it happened. Anything
    else becomes a `WorkerError` carrying the child's traceback.
    """

    def __init__(self, type_name: str, message: str, trace: str = ""):
        self.type_name = type_name
        self.message = message
        self.trace = trace

    @classmethod
    def of(cls, error: BaseException) -> ChildError:
        """Capture `error` (with its traceback, unless it is one of prl's own errors)."""
        own = isinstance(error, (ConfigError, WorkerError))
        trace = "" if own else "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return cls(type(error).__name__, str(error), trace)

    def exception(self, where: str) -> Exception:
        """The exception to raise in the parent for this error, raised `where` ("worker 3", "the inference server")."""
        if self.type_name == "ConfigError":
            return ConfigError(self.message)
        if self.type_name == "WorkerError":
            return WorkerError(self.message)
        return WorkerError(f"{self.type_name} in {where}: {self.message}\n{self.trace}".rstrip())

    def __repr__(self) -> str:
        return f"ChildError({self.type_name}: {self.message})"


class Channel:
    """A child's end of its pipe to the parent: sends under a lock (a child's own threads may send too),
    receives with the parent watched, and reports an error once."""

    def __init__(self, conn, parent: psutil.Process, index: Optional[int] = None):
        self.conn = conn
        self.parent = parent
        self.index = index
        """The worker's index, sent with an error report (None for a child that is not a worker)."""
        self._lock = threading.Lock()
        self._reported = False

    def send(self, message: Any) -> None:
        """Send one message to the parent."""
        with self._lock:
            self.conn.send(message)

    def recv(self) -> Any:
        """The parent's next message, raising ParentGone if the parent exits while this waits."""
        wait_until_readable(self.conn, self.parent)
        return self.conn.recv()

    def report(self, error: BaseException) -> None:
        """Send ("error", index, ChildError) for `error`, once: a body whose clean-up is slow reports
        before it cleans up, and `child_main` then sends nothing more."""
        if self._reported:
            return
        self._reported = True
        try:
            self.send(("error", self.index, ChildError.of(error)))
        except (OSError, EOFError):
            pass  # the parent is gone


def use_threads(threads: int) -> None:
    """`threads` threads for torch and for numpy's BLAS. A worker takes one: its matrices are tiny, and
    idle BLAS threads spin-wait, which starves the other processes once they outnumber the cores."""
    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def use_one_thread() -> None:
    """One thread for torch and for numpy's BLAS (see `use_threads`)."""
    use_threads(1)


def seed_process(seed: int) -> None:
    """Seed this process's global generators (Python's, numpy's, torch's), which an env may draw from."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


PR_SET_PDEATHSIG = 1
"""Linux's prctl option that has the kernel signal a process when its parent exits."""


def die_with_parent() -> None:
    """Have Linux SIGKILL this process when its parent exits, even while it is stuck in an env's step.

    The parent watch (`wait_until_readable`) only runs between steps, so without this a child
    stuck in native code would outlive a killed learner and keep its shared memory. The parent
    is the process that forked this one: the learner with spawn, the forkserver otherwise. The
    forkserver exits once nothing holds the write end of its "alive" pipe, which the learner
    holds and every child it forks inherits; this child closes its copy, so that the learner's
    death ends the forkserver and then this child. Elsewhere than Linux the watch alone remains.
    """
    # CPython's forkserver hands each child the learner's end of that pipe (`_forkserver_alive_fd`);
    # a child uses it only to start processes from the same forkserver, which prl's children never do.
    server = getattr(forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and alive_fd is not None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        server._forkserver_alive_fd = None
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # a libc without prctl: the parent watch alone remains


def wait_until_readable(conn, parent: psutil.Process) -> None:
    """Block until `conn` has something to read, waking every POLL_S to check that the parent is still alive."""
    while not conn.poll(POLL_S):
        if not parent.is_running():
            raise ParentGone()


def child_process(
    context,
    name: str,
    body: Callable[..., None],
    conn,
    *args: Any,
    index: Optional[int] = None,
    threads: int = 1,
    seed: Optional[int] = None,
):
    """A daemon process of the multiprocessing `context`, not started yet, that runs
    `child_main(body, conn, <this process's id>, index, threads, seed, *args)`; start it with `start_child`."""
    return context.Process(
        target=child_main, name=name, args=(body, conn, os.getpid(), index, threads, seed, *args), daemon=True
    )


def start_child(process, child_conn) -> None:
    """Start a `child_process` with Ctrl-C ignored and the main script hidden while it starts
    (`prl.collection.processes`), then close this process's copy of the child's end of its pipe."""
    try:
        with sigint_ignored(), main_script_hidden():
            process.start()
    finally:
        child_conn.close()


def child_main(
    body: Callable[..., None],
    conn,
    parent_pid: int,
    index: Optional[int],
    threads: int,
    seed: Optional[int],
    *args: Any,
) -> None:
    """Entry point of every prl child process: set it up, run `body(channel, *args)`, report what it raised.

    Args:
        body: the child's work; it talks to the parent through the `Channel` it is given and
            returns when told to exit.
        conn: the child's end of its pipe to the parent (closed when the child ends).
        parent_pid: the parent's process id, watched by every wait on the channel.
        index: the worker's index, sent with an error report (None for a child that is not a worker).
        threads: torch and BLAS threads for this process.
        seed: the seed of the process's global generators (`prl.seeding`), or None to leave them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    die_with_parent()  # before the check below, so a parent that exits in between is noticed by one of them
    use_threads(threads)
    if seed is not None:
        seed_process(seed)
    try:
        parent = psutil.Process(parent_pid)
    except psutil.NoSuchProcess:
        conn.close()
        return  # the parent ended before this child started
    channel = Channel(conn, parent, index)
    try:
        body(channel, *args)
    except ParentGone:
        pass
    except BaseException as error:
        channel.report(error)
    finally:
        conn.close()
