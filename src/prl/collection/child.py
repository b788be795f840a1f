"""What every child process of prl runs: one thread, waits that watch the parent, and the parent's death as an exception."""

from __future__ import annotations

import psutil
import torch
from threadpoolctl import threadpool_limits

POLL_S = 0.5
"""How often a waiting worker wakes to check that its parent is still alive."""


class ParentGone(Exception):
    """The process that started this worker has exited."""


def use_one_thread() -> None:
    """One thread for torch and for numpy's BLAS in a worker: its matrices are tiny, and idle BLAS
    threads spin-wait, which starves the other processes once they outnumber the cores."""
    torch.set_num_threads(1)
    threadpool_limits(limits=1)


def wait_until_readable(conn, parent: psutil.Process) -> None:
    """Block until `conn` has something to read, waking every POLL_S to check that the parent is still alive."""
    while not conn.poll(POLL_S):
        if not parent.is_running():
            raise ParentGone()


def wait_for_message(conn, parent: psutil.Process):
    """Block until the parent sends something, waking every POLL_S to check it is still alive."""
    wait_until_readable(conn, parent)
    return conn.recv()
