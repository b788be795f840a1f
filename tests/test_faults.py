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
from conftest import session_processes

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
    children = [pid for pid in session_processes(process.pid) if pid != process.pid]
    assert len(children) >= 2, "the workers should be running"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = session_processes(process.pid)
    if survivors:
        os.killpg(process.pid, signal.SIGKILL)
    assert not survivors, "workers must notice their learner is gone and exit"


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
def test_a_stuck_worker_ends_the_run_after_worker_timeout_and_leaves_nothing(inference, server, tmp_path, no_leaks):
    config = toy_config(
        functools.partial(toy_envs.HangingEnv, str(tmp_path / "hung")),
        worker_timeout=2.0,
        inference=inference,
        inference_server=server,
    )
    learner = Learner(config)
    pool = ActorPool(config, learner.policy)
    pids = pool.pids + ([pool.server_pid] if server == "process" else [])
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker\(s\) \[\d\] sent no rollout within 2 s; raise worker_timeout"):
        pool.collect()
    assert 2.0 <= time.monotonic() - started < 30
    assert (tmp_path / "hung").exists(), "the env did hang"
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
