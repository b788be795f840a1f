"""Process start-up and shutdown: the multiprocessing context workers start from, starting it early, and stopping processes.

Workers start with forkserver where the OS has it (spawn elsewhere), never plain fork: a fork
of a process that has initialized CUDA is unsafe. The forkserver imports the worker module
once, and every worker is forked from it, so workers start in milliseconds instead of each
importing torch. `prestart` launches that server before the main process imports torch, so
the two imports overlap.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from multiprocessing import forkserver

from prl.config import Config

WORKER_MODULE = "prl.collection.worker"


def resolve_start_method(config: Config) -> str:
    """The start method to use: `config.start_method`, or forkserver where available, else spawn."""
    if config.start_method != "auto":
        return config.start_method
    return "forkserver" if os.name == "posix" and "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def worker_context(config: Config):
    """The multiprocessing context for `config`'s workers, with the worker module preloaded."""
    method = resolve_start_method(config)
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([WORKER_MODULE])
    return context


@contextlib.contextmanager
def sigint_ignored():
    """Ignore SIGINT while child processes launch, so they inherit the ignore (it survives exec).

    Ctrl-C reaches every process of the terminal's group; only the parent should act on it,
    and a forkserver interrupted while importing torch would print a stray traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def main_script_hidden():
    """Start child processes without them re-running the user's main script.

    Spawn and forkserver children import the parent's `__main__` (from its spec or its file)
    before unpickling their target, so a script without an `if __name__ == "__main__":` guard
    would start training again inside every worker. prl's workers need nothing from that
    script (their target lives in prl, env callables travel by value through cloudpickle), so
    while they start, the main module shows neither a spec nor a file, as in an interactive
    session.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def stop_forkserver() -> None:
    """End the forkserver now, if one runs: a process that is done with its workers calls this before it exits.

    Left alone, the forkserver notices its parent's exit and then tears down its own interpreter,
    torch included, which takes most of a second on 2 cores, while it still holds the parent's
    stdout and stderr. Nothing in it needs that teardown: it holds no data, only imported modules.
    A later pool starts a new one. This reaches into `multiprocessing.forkserver`'s server object,
    as CPython's own tests do; where it has another shape, the server is left to end by itself.
    """
    server = getattr(forkserver, "_forkserver", None)
    pid, stop = getattr(server, "_forkserver_pid", None), getattr(server, "_stop", None)
    if pid is None or stop is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    stop()  # closes its pipe, reaps it and removes its socket


def prestart(config: Config) -> None:
    """Launch the forkserver now (it imports the worker module in the background); no-op for spawn."""
    if resolve_start_method(config) == "forkserver":
        worker_context(config)
        with sigint_ignored(), main_script_hidden():
            forkserver.ensure_running()


def stop_processes(processes: list, conns: list, join_s: float) -> None:
    """Stop child processes in protocol order: send None on each pipe, join each for up to `join_s`
    in all, then terminate and kill what is left, and close the pipes. Safe to call more than once."""
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, EOFError, ValueError):
            pass
    started = [process for process in processes if process.pid is not None]
    deadline = time.monotonic() + join_s
    for process in started:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in started:
        for end in (process.terminate, process.kill):
            if process.is_alive():
                end()
                process.join(timeout=1.0)
    for conn in conns:
        conn.close()
    processes.clear()
    conns.clear()
