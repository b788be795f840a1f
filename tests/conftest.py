"""Shared fixtures: toy envs pickled by value, and checks that nothing outlives a test."""

import os
import signal
import subprocess
import sys
import time

import cloudpickle
import psutil
import pytest
import toy_envs

cloudpickle.register_pickle_by_value(toy_envs)


def shm_entries() -> set:
    """Names in /dev/shm (empty where the OS has none)."""
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves new /dev/shm segments behind."""
    before = shm_entries()
    yield
    leaked = shm_entries() - before
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


def session_processes(session_id: int) -> list:
    """Live processes (zombies aside) whose session is `session_id`."""
    found = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(process.pid) == session_id:
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


def run_script(args: list, cwd, timeout: float = 600, grace_s: float = 3.0):
    """Run `python ARGS` in a new session; return (CompletedProcess-like result, processes left in its session).

    Every process the script starts (forkserver, workers) inherits its session, so anything
    still in that session `grace_s` after the script exits was left behind.
    """
    process = subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    deadline = time.monotonic() + grace_s
    survivors = session_processes(process.pid)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.1)
        survivors = session_processes(process.pid)
    if survivors:
        os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), survivors
