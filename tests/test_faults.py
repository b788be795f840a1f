"""Faults prl survives or refuses clearly: failing envs, killed workers, a killed learner, non-finite data."""

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import toy_envs
from conftest import session_processes, session_workers

from prl import ActorPool, Learner, WorkerError, train
from prl.config import from_flat

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"


def toy_config(env, **options):
    values = dict(
        env=env,
        workers=2,
        envs_per_worker=2,
        rollout_steps=8,
        steps=320,
        minibatch_size=16,
        progress=False,
        eval_episodes=0,
    )
    return from_flat({**values, **options})


def test_an_env_that_raises_once_is_rebuilt_and_training_completes(tmp_path, no_leaks):
    env = functools.partial(toy_envs.FailOnceEnv, str(tmp_path / "failed"))
    with pytest.warns(UserWarning, match="raised RuntimeError: a one-off env failure"):
        summary = train(toy_config(env, out=str(tmp_path / "run")))
    assert summary["env_steps"] == 320 and (tmp_path / "failed").exists()
    last = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1]
    assert '"worker_restarts": 1' in last


def test_non_finite_rewards_stop_the_run_or_are_dropped(tmp_path, no_leaks):
    config = toy_config(functools.partial(toy_envs.NonFiniteEnv, str(tmp_path / "once")))
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        with pytest.raises(
            WorkerError, match=r"NonFiniteEnv \(env \d of this worker\) returned a non-finite reward at step 4"
        ):
            pool.collect()
    dropping = toy_config(functools.partial(toy_envs.NonFiniteEnv, str(tmp_path / "again")), nan_policy="drop")
    learner = Learner(dropping)
    with ActorPool(dropping, learner.policy) as pool:
        with pytest.warns(UserWarning, match="NonFiniteData"):
            batch = pool.collect()
    assert torch.isfinite(batch.rewards).all(), "the rollout that held the NaN must never reach the learner"
    assert pool.restarts == 1


def test_killing_the_learner_stops_every_worker_within_5_s(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), "--steps", "10000000", "--out", str(out), "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.1)
    assert process.poll() is None
    assert len(session_workers(process.pid)) >= 2, "the workers should be running (the forkserver is not one)"
    assert not kill_and_collect_survivors(process), "workers must notice their learner is gone and exit"


def kill_and_collect_survivors(process: subprocess.Popen) -> list:
    """SIGKILL a learner started in a session of its own; return what of its session still runs 5 s later
    (then killed too, so that a failing test leaves nothing behind)."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = session_processes(process.pid)
    if survivors:
        os.killpg(process.pid, signal.SIGKILL)
    return survivors


def interrupt_and_collect_survivors(process: subprocess.Popen) -> tuple[tuple, list]:
    """Ctrl-C a run started in a session of its own and wait up to 60 s for it to end; return its
    (stdout, stderr) as `communicate` gives them and what of its session still runs 5 s later (then
    killed too, so that a failing test leaves nothing behind)."""
    os.kill(process.pid, signal.SIGINT)
    try:
        output = process.communicate(timeout=60)
        deadline = time.monotonic() + 5  # the forkserver ends just after the run does
        while session_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        survivors = session_processes(process.pid)
        if survivors:
            os.killpg(process.pid, signal.SIGKILL)
    return output, survivors


HANGING_RUN = """
import functools, sys
import cloudpickle, toy_envs
from prl.config import from_flat
from prl.run.training import StopRequested, train

cloudpickle.register_pickle_by_value(toy_envs)
config = from_flat(dict(
    env=functools.partial(toy_envs.HangingEnv, sys.argv[1]), workers=2, envs_per_worker=2, rollout_steps=8,
    steps=10**7, minibatch_size=16, progress=False, eval_episodes=0, worker_timeout=600, out=sys.argv[2],
))
try:
    train(config)
except StopRequested as stopped:
    print(f"stopped by {stopped}", flush=True)
    sys.exit(130)
"""


def start_hanging_run(tmp_path) -> tuple[subprocess.Popen, Path]:
    """A training process whose one env hangs in `step` for an hour (workers wait 600 s for it); returns once it hangs."""
    script = tmp_path / "hanging_run.py"
    script.write_text(HANGING_RUN)
    flag = tmp_path / "hung"
    process = subprocess.Popen(
        [sys.executable, str(script), str(flag), str(tmp_path / "run")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])},
        stdout=open(tmp_path / "stdout", "w"),  # files, not pipes: a surviving worker would hold a pipe open
        stderr=open(tmp_path / "stderr", "w"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not flag.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert flag.exists(), (tmp_path / "stderr").read_text()
    time.sleep(0.5)  # well inside the hung step
    return process, flag


def test_a_worker_stuck_in_an_env_dies_with_its_killed_learner(tmp_path):
    process, _ = start_hanging_run(tmp_path)
    assert len(session_workers(process.pid)) == 2, "both workers run (the forkserver is not one)"
    assert not kill_and_collect_survivors(process), "a worker stuck in env.step must not outlive its learner"


def test_ctrl_c_stops_a_run_at_once_while_it_waits_for_a_stuck_worker(tmp_path):
    process, _ = start_hanging_run(tmp_path)
    asked = time.monotonic()
    _, survivors = interrupt_and_collect_survivors(process)
    assert time.monotonic() - asked < 20, "not after the 600 s worker timeout"
    stdout, stderr = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert process.returncode == 130 and "stopped by SIGINT at 0 env steps" in stdout, stderr
    assert not survivors


def test_a_worker_killed_between_collects_is_replaced(no_leaks):
    import psutil

    config = toy_config(toy_envs.CountingEnv)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        psutil.Process(pool.pids[0]).kill()
        time.sleep(0.2)  # dead before the next request is sent: the send fails, the sentinel recovers
        with pytest.warns(UserWarning, match="worker 0 died"):
            batch = pool.collect()
        assert pool.restarts == 1 and batch.worker_ids.tolist() == [0, 1]


def test_a_nan_observation_stops_the_run_naming_the_env_and_step(tmp_path, no_leaks):
    config = toy_config(functools.partial(toy_envs.NonFiniteEnv, str(tmp_path / "once"), where="observation"))
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        with pytest.raises(
            WorkerError, match=r"NonFiniteEnv \(env \d of this worker\) returned a non-finite observation at step 4"
        ):
            pool.collect()


@pytest.mark.parametrize("inference, server", [("worker", "thread"), ("central", "thread"), ("central", "process")])
def test_a_stuck_worker_is_killed_and_replaced_after_worker_timeout(inference, server, tmp_path, no_leaks):
    config = toy_config(
        functools.partial(toy_envs.HangingEnv, str(tmp_path / "hung")),
        worker_timeout=2.0,
        inference=inference,
        inference_server=server,
    )
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pids = pool.pids
        started = time.monotonic()
        with pytest.warns(UserWarning, match=r"worker \d sent no rollout within 2 s, so it was killed"):
            batch = pool.collect()
        assert 2.0 <= time.monotonic() - started < 30
        assert (tmp_path / "hung").exists(), "the env did hang"
        assert pool.restarts == 1 and batch.worker_ids.tolist() == [0, 1]
        assert len(set(pool.pids) - set(pids)) == 1, "one replacement"
        assert not [pid for pid in pids if pid not in pool.pids and alive(pid)], "the stuck worker is gone"
        pool.collect()  # and collection goes on


@pytest.mark.parametrize("inference, server", [("worker", "thread"), ("central", "process")])
def test_a_worker_stuck_beyond_the_restart_budget_ends_the_run_and_leaves_nothing(
    inference, server, tmp_path, no_leaks
):
    config = toy_config(
        functools.partial(toy_envs.HangingEnv, str(tmp_path / "hung")),
        worker_timeout=2.0,
        max_worker_restarts=0,
        inference=inference,
        inference_server=server,
    )
    learner = Learner(config)
    pool = ActorPool(config, learner.policy)
    pids = pool.pids + ([pool.server_pid] if server == "process" else [])
    with pytest.raises(WorkerError, match=r"worker \d failed 1 times .*sent no rollout within 2 s, so it was killed"):
        pool.collect()
    pool.close()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids), "the stuck worker (and a server process) must be stopped too"


def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_run_whose_workers_fail_for_good_is_saved_with_the_command_that_resumes_it(tmp_path, no_leaks):
    from prl import train

    out = tmp_path / "run"
    config = toy_config(
        functools.partial(toy_envs.CountingEnv, terminate_at=5, fail_at=40), max_worker_restarts=0, out=str(out)
    )
    with pytest.raises(WorkerError) as failure:
        train(config)
    message = str(failure.value)
    assert "failed 1 times" in message and f"continue with: python scripts/train.py --resume {out}" in message
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=False)
    assert checkpoint["learner"]["updates"] >= 1, "the updates made before the failure are kept"


def test_ctrl_c_stops_an_async_run_between_updates_with_the_run_saved_and_nothing_left(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), "--mode", "async", "--steps", "10000000", "--out", str(out), "--no-progress"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.1)
    (_, stderr), survivors = interrupt_and_collect_survivors(process)
    assert process.returncode == 130 and "stopped by SIGINT" in stderr and "--resume" in stderr, stderr
    assert (out / "checkpoint.pt").exists() and not survivors
