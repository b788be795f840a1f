"""Shared fixtures: toy envs pickled by value, devices, learner snapshots, and checks that nothing outlives a test."""

import copy
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import psutil
import pytest
import torch
import toy_envs

cloudpickle.register_pickle_by_value(toy_envs)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
"""The learner devices present here: tests that take the `device` fixture run once on each."""


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """A learner device present on this machine (cpu, and cuda where there is one)."""
    return request.param


@pytest.fixture
def first_updates(monkeypatch):
    """A list that receives (learner, deep copy of its state_dict) as each learner's first update begins."""
    from prl.learning.learner import Learner

    captured = []
    original = Learner.update

    def update(self, batch):
        if not any(learner is self for learner, _ in captured):
            captured.append((self, copy.deepcopy(self.state_dict())))
        return original(self, batch)

    monkeypatch.setattr(Learner, "update", update)
    return captured


@pytest.fixture
def first_log_ratios(monkeypatch):
    """A list that receives, as each learner update scores its first minibatch, that minibatch's log-ratios
    (the learner's log-probabilities minus the ones stored with the actions), on the CPU."""
    import prl.learning.learner as learner_module

    captured = []
    update_began = [False]
    original_update, original_loss = learner_module.Learner.update, learner_module.ppo_loss

    def update(self, batch):
        update_began[0] = True
        return original_update(self, batch)

    def ppo_loss(new_logprob, old_logprob, *args, **kwargs):
        if update_began[0]:
            update_began[0] = False
            captured.append((new_logprob - old_logprob).detach().cpu())
        return original_loss(new_logprob, old_logprob, *args, **kwargs)

    monkeypatch.setattr(learner_module.Learner, "update", update)
    monkeypatch.setattr(learner_module, "ppo_loss", ppo_loss)
    return captured


def assert_same_tensors(actual: dict, expected: dict, what: str) -> None:
    """Two dicts of tensors hold the same names and exactly equal values (compared on the CPU)."""
    assert set(actual) == set(expected), what
    for name, value in expected.items():
        assert torch.equal(actual[name].cpu(), value.cpu()), f"{what}: {name}"


def collect_twice(config) -> tuple:
    """(learner, first, second): a fresh pool of `config`'s backend collects with the first weights,
    the learner updates on that batch and publishes, and the pool collects again (batches on the learner's device)."""
    from prl import Learner
    from prl.collection.backends import open_collector

    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        first = pool.collect(learner.device)
        learner.update(first)
        pool.publish(learner.policy)
        return learner, first, pool.collect(learner.device)


def on_device(policy, *tensors):
    """`tensors` moved to the device `policy` lives on, so a test never mixes devices."""
    target = next(policy.parameters()).device
    return [tensor.to(target) for tensor in tensors]


OWN_SHM_PREFIXES = ("torch_", "psm_", "sem.mp-", "mp-", "prl")
"""/dev/shm names that prl's processes can create: torch's shared tensors (torch_PID_...), and
multiprocessing's shared memory and semaphores. Other programs' entries never fail a test."""


def _torch_entry_of_another_program(name: str) -> bool:
    """True for a torch_PID_... entry whose PID is a live process outside this test process's tree."""
    pid = name.split("_")[1] if name.startswith("torch_") else ""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        process = psutil.Process(int(pid))
        return os.getpid() not in [parent.pid for parent in process.parents()]
    except psutil.Error:
        return False  # gone: it may have been one of ours


def shm_entries() -> set:
    """Entries in /dev/shm that prl or torch created for this test run (empty where the OS has none)."""
    if not os.path.isdir("/dev/shm"):
        return set()
    return {
        name
        for name in os.listdir("/dev/shm")
        if name.startswith(OWN_SHM_PREFIXES) and not _torch_entry_of_another_program(name)
    }


FORKSERVER_MAIN = "from multiprocessing.forkserver import main"
SPAWN_MAIN = "from multiprocessing.spawn import spawn_main"


def _command(process: psutil.Process) -> str:
    return " ".join(process.cmdline())


def is_worker(process: psutil.Process) -> bool:
    """True for a live process that multiprocessing started to do work: a worker, an inference server, a Ray driver.

    A forkserver's children keep its command line, so the forkserver itself (which starts with
    the first pool and outlives every pool by design) is the one whose parent does not run it.
    multiprocessing's resource tracker and everything else (Ray's own processes) are not workers.
    """
    try:
        command = _command(process)
        if SPAWN_MAIN in command:
            return process.status() != psutil.STATUS_ZOMBIE
        parent = process.parent()
        return FORKSERVER_MAIN in command and parent is not None and FORKSERVER_MAIN in _command(parent)
    except psutil.Error:
        return False  # gone, or a zombie: not running


def live_workers() -> set:
    """The pids of this process's descendants that are workers (`is_worker`)."""
    return {child.pid for child in psutil.Process().children(recursive=True) if is_worker(child)}


WORKER_EXIT_S = 5.0
"""How long a worker may take to exit after the test that started it ends."""


@pytest.fixture
def no_leaks():
    """Fail the test if it leaves worker processes running or new /dev/shm segments behind."""
    before, workers_before = shm_entries(), live_workers()
    yield
    deadline = time.monotonic() + WORKER_EXIT_S
    left = live_workers() - workers_before
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = live_workers() - workers_before
    assert not left, f"worker processes left running: {sorted(left)}"
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


def session_workers(session_id: int) -> list:
    """The workers (`is_worker`) among the live processes of session `session_id`, the forkserver left out."""
    workers = []
    for pid in session_processes(session_id):
        try:
            if is_worker(psutil.Process(pid)):
                workers.append(pid)
        except psutil.Error:
            continue
    return workers


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
