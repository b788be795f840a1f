"""The Ray backend (`prl.collection.ray_pool`): the local pool's batches, guarantees and clean shutdown, over Ray actors."""

import functools
import os
import signal
import sys
import threading

import gymnasium as gym
import psutil
import pytest
import ray  # the test extra installs it: a broken Ray must fail here, not skip every test
import torch
import toy_envs
from conftest import collect_twice

from prl import ConfigError, Learner, WorkerError, train, tuned_config
from prl.collection.backends import open_collector
from prl.collection.processes import prestart
from prl.collection.ray_driver import answers, local_ray_options
from prl.config import from_flat

FIELDS = ("actions", "logprobs", "values", "rewards", "terminated", "truncated", "final_values", "episode_returns")


def ray_config(env="CartPole-v1", **options):
    defaults = dict(env=env, workers=2, envs_per_worker=3, rollout_steps=16, minibatch_size=32, progress=False, seed=5)
    return from_flat({**defaults, **options})


def descendants() -> set:
    return {child.pid for child in psutil.Process().children(recursive=True) if child.status() != psutil.STATUS_ZOMBIE}


def wait_until_gone(pids: set, timeout: float = 10.0) -> set:
    """The pids in `pids` still running after up to `timeout` seconds."""
    deadline = psutil.time.time() + timeout
    while {pid for pid in pids if psutil.pid_exists(pid)} and psutil.time.time() < deadline:
        psutil.time.sleep(0.2)
    return {pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE}


def test_a_pool_that_starts_ray_shuts_it_down_and_leaves_no_process(monkeypatch, no_leaks):
    assert not ray.is_initialized()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # another cluster's address must not be joined unasked
    config = ray_config(lambda: gym.make("CartPole-v1"), backend="ray")  # a lambda reaches the actors only
    prestart(config)  # the forkserver the driver starts from outlives pools, as for local workers
    before = descendants()
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        assert len(pool.pids) == 2 and set(pool.pids) <= descendants()
        batch = pool.collect()
        assert batch.rewards.shape == (16, 6)
    assert not ray.is_initialized(), "the learner's process never connects to Ray: its driver process does"
    deadline = psutil.time.time() + 10
    while descendants() - before and psutil.time.time() < deadline:
        psutil.time.sleep(0.2)
    assert not descendants() - before, "Ray's processes must stop with the pool that started them"


def test_actors_spread_over_the_nodes_of_a_cluster_the_pool_joins_and_leaves_running(no_leaks):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        config = ray_config(backend="ray", ray_address=cluster.address)
        learner = Learner(config)
        with open_collector(config, learner.policy) as pool:
            batch = pool.collect()
            assert len(set(pool.nodes)) == 2, "one actor per node: each node has one CPU"
        assert batch.worker_ids.tolist() == [0, 1] and not torch.isnan(batch.rewards).any()
        assert answers(cluster.address), "a cluster the pool joined keeps running"
    finally:
        cluster.shutdown()


def after_first_updates(metrics, action, stop: threading.Event, updates: int = 3) -> threading.Thread:
    """A started thread that calls `action` once `metrics` (a run's metrics.jsonl) holds `updates`
    lines, unless `stop` is set first: a loss timed from the run's progress, not from the clock,
    hits a running run on a slow machine too."""

    def wait_then_act():
        while not stop.wait(0.05):
            if metrics.exists() and len(metrics.read_text().splitlines()) >= updates:
                action()
                return

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def train_until_lost(tmp_path, cluster, lose, **options) -> str:
    """Train CartPole on `cluster`, call `lose` after its third update, and return the error the
    run ends with, having checked that it names the resume command and that the run was saved."""
    out = tmp_path / "run"
    config = tuned_config(
        "CartPole-v1",
        backend="ray",
        ray_address=cluster.address,
        steps=10**7,
        progress=False,
        out=str(out),
        eval_episodes=0,
        **options,
    )
    stop = threading.Event()
    loser = after_first_updates(out / "metrics.jsonl", lose, stop)
    try:
        with pytest.raises(WorkerError) as failure:
            train(config)
    finally:
        stop.set()
        loser.join()
    message = str(failure.value)
    assert f"continue with: python scripts/train.py --resume {out}" in message
    assert torch.load(out / "checkpoint.pt", weights_only=False)["learner"]["updates"] >= 1
    return message


def test_losing_the_workers_node_ends_the_run_in_one_sentence_with_the_run_saved(tmp_path, no_leaks):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the learner's node runs no actor
    node = cluster.add_node(num_cpus=2)
    try:
        message = train_until_lost(
            tmp_path, cluster, lambda: cluster.remove_node(node, allow_graceful=False), worker_timeout=10.0
        )
    finally:
        cluster.shutdown()
    assert "did not start within 10 s" in message and "free CPU(s) per worker" in message


def test_losing_the_head_node_ends_the_run_in_one_sentence_with_the_run_saved(tmp_path, no_leaks):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2)
    cluster_processes = [psutil.Process(pid) for pid in descendants()]

    def lose_head():
        cluster_processes.extend(psutil.Process(pid) for pid in descendants())
        cluster.head_node.kill_all_processes(check_alive=False, allow_graceful=False)

    try:
        message = train_until_lost(tmp_path, cluster, lose_head)
    finally:
        cluster.shutdown()
        for process in cluster_processes:  # the simulated head's agents outlive its raylet by a minute
            try:
                if process.name().startswith(("ray::", "raylet", "gcs_server")):
                    process.kill()
            except psutil.Error:
                pass
    # the driver sees the head's port close, or Ray ends the driver first
    assert message.startswith(("the Ray cluster went away: its head node", "the Ray driver process ended")), message


def test_a_driver_that_ray_ends_is_reported_and_its_actors_do_not_outlive_the_pool(no_leaks):
    config = ray_config(backend="ray", worker_timeout=20.0)
    learner = Learner(config)
    pool = open_collector(config, learner.policy)
    try:
        pool.collect()
        actors = set(pool.pids)
        driver = psutil.Process(pool.driver_pid)
        driver.kill()  # what Ray does to a driver whose node or head is lost, here between two calls
        deadline = psutil.time.time() + 10
        while psutil.time.time() < deadline:
            try:
                if driver.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.Error:
                break
            psutil.time.sleep(0.05)
        learner.update(pool.buffer.gather(range(2)))
        with pytest.raises(WorkerError, match=r"the Ray driver process ended during publish \(exit code -9\)"):
            pool.publish(learner.policy)
        with pytest.raises(RuntimeError, match="the pool is closed"):
            pool.collect()
    finally:
        pool.close()
    assert not wait_until_gone(actors, timeout=30.0), "the Ray instance the driver started must not outlive it"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the tests below (pools then leave it running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize(
    "env",
    ["CartPole-v1", "MiniGrid-Empty-5x5-v0", toy_envs.ImageAndVectorEnv, "prl/IllegalMoves-v0", toy_envs.ToyAgents],
)
def test_ray_batches_equal_the_local_pools_for_the_same_seed(env, local_ray, no_leaks):
    batches = {backend: collect_twice(ray_config(env, backend=backend))[1:] for backend in ("local", "ray")}
    for local, remote in zip(batches["local"], batches["ray"]):
        local_obs = local.obs if isinstance(local.obs, dict) else {"": local.obs}
        remote_obs = remote.obs if isinstance(remote.obs, dict) else {"": remote.obs}
        for key in local_obs:
            assert local_obs[key].dtype == remote_obs[key].dtype and torch.equal(local_obs[key], remote_obs[key])
        for name in FIELDS + (("agent_active", "team_returns") if local.agent_active is not None else ()):
            assert torch.allclose(getattr(local, name), getattr(remote, name), equal_nan=True), name
        assert torch.equal(local.env_ids, remote.env_ids) and torch.equal(local.worker_ids, remote.worker_ids)
        assert torch.equal(local.policy_versions, remote.policy_versions)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_recurrent_policy_collects_on_ray_what_it_collects_locally(kind, local_ray, first_log_ratios, no_leaks):
    options = dict(recurrent=kind, recurrent_size=8, rollout_steps=32, minibatch_size=192, epochs=1)
    batches = {backend: collect_twice(ray_config(backend=backend, **options)) for backend in ("local", "ray")}
    (_, _, local), (learner, _, remote) = batches["local"], batches["ray"]
    assert remote.initial_states.abs().sum() > 0 and remote.episode_starts[1:].any()
    assert torch.equal(local.episode_starts, remote.episode_starts)
    assert torch.allclose(local.initial_states, remote.initial_states)
    for name in FIELDS:
        assert torch.allclose(getattr(local, name), getattr(remote, name), equal_nan=True), name
    first_log_ratios.clear()
    learner.update(remote)
    assert float(first_log_ratios[0].abs().max()) <= 1e-5


def test_an_actor_killed_mid_run_is_replaced_and_collection_goes_on(local_ray, no_leaks):
    config = ray_config(backend="ray", mode="overlap", rollout_steps=256)
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        pool.collect()  # overlap: every actor is already in its next rollout
        killed = pool.pids[1]
        os.kill(killed, signal.SIGKILL)
        with pytest.warns(UserWarning, match="Ray actor 1 died"):
            pool.collect()  # the rollout in flight may have finished before the kill: then the next one fails
            batch = pool.collect()
        assert pool.restarts == 1 and pool.pids[1] != killed
        assert batch.worker_ids.tolist() == [0, 1] and not torch.isnan(batch.rewards).any()


def test_async_mode_on_ray_takes_the_first_rollouts_back_with_the_newest_weights(tmp_path, local_ray, no_leaks):
    env = functools.partial(toy_envs.SlowInOneWorker, str(tmp_path / "slow"), os.getpid(), 0.02)
    config = ray_config(env, backend="ray", mode="async", envs_per_worker=1, rollout_steps=8, minibatch_size=8)
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        first = pool.collect()
        fast = int(first.worker_ids[0])
        assert first.worker_ids.tolist() == [fast, fast], "the fast actor's two rollouts make the first batch"
        assert torch.equal(first.obs[0, 1], first.obs[-1, 0]), "one env's rollouts, in time order"
        learner.update(first)
        assert pool.publish(learner.policy) == 1
        seen = []
        for _ in range(4):
            batch = pool.collect()
            seen += batch.worker_ids.tolist()
            assert (batch.step_versions == batch.policy_versions[None, :]).all()
            assert int(batch.policy_versions.max()) <= learner.updates
            learner.update(batch)
            pool.publish(learner.policy)
        assert seen.count(fast) > seen.count(1 - fast), "no barrier waits for the slow actor"


def test_an_actor_killed_with_two_rollouts_owed_in_async_mode_is_replaced(local_ray, no_leaks):
    config = ray_config(backend="ray", mode="async", rollout_steps=256)
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)
        killed = pool.pids[1]
        os.kill(killed, signal.SIGKILL)
        with pytest.warns(UserWarning, match="Ray actor 1 died"):
            for _ in range(100):  # actor 0 may fill freed slots while the replacement starts
                batch = pool.collect()
                assert not torch.isnan(batch.rewards).any()
                pool.publish(learner.policy)
                if 1 in batch.worker_ids.tolist():
                    break
        assert pool.restarts == 1 and pool.pids[1] != killed and 1 in batch.worker_ids.tolist()


def test_a_learner_busy_for_longer_than_worker_timeout_kills_no_actor_that_returned(local_ray, no_leaks):
    import time

    config = ray_config(backend="ray", mode="async", worker_timeout=5.0)
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)
        time.sleep(6.0)  # a long evaluation, say: the actors' results wait in the object store
        for _ in range(2):
            pool.collect()
            pool.publish(learner.policy)
        assert pool.restarts == 0


def test_an_actor_stuck_in_an_env_is_killed_and_replaced_after_worker_timeout(tmp_path, local_ray, no_leaks):
    env = functools.partial(toy_envs.HangingEnv, str(tmp_path / "hung"))
    # The timeout also bounds the replacement actor's start, which on a cold machine (a fresh
    # process importing torch) can take several seconds.
    config = ray_config(env, backend="ray", worker_timeout=10.0)
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        pids = pool.pids
        with pytest.warns(UserWarning, match=r"Ray actor [01] sent no rollout within 10 s, so it was killed"):
            batch = pool.collect()
        assert (tmp_path / "hung").exists(), "the env did hang"
        assert pool.restarts == 1 and len(set(pool.pids) - set(pids)) == 1
        assert batch.worker_ids.tolist() == [0, 1] and not torch.isnan(batch.rewards).any()
        assert not wait_until_gone(set(pids) - set(pool.pids)), "the stuck actor's process is gone"


def test_an_env_error_in_an_actor_is_recovered_and_reaches_the_learner_as_a_warning(tmp_path, local_ray, no_leaks):
    config = ray_config(functools.partial(toy_envs.FailOnceEnv, str(tmp_path / "failed"), fail_at=3), backend="ray")
    learner = Learner(config)
    with open_collector(config, learner.policy) as pool:
        with pytest.warns(UserWarning, match="Ray actor [01] raised RuntimeError: a one-off env failure"):
            batch = pool.collect()
        assert pool.restarts == 1 and not torch.isnan(batch.rewards).any()


def test_an_env_that_cannot_be_built_on_the_actors_ends_the_start_with_its_error(local_ray, no_leaks):
    config = ray_config(functools.partial(toy_envs.BuildsInOneProcess, os.getpid()), backend="ray")
    with pytest.raises(WorkerError, match="^RuntimeError in Ray actor [01]: this env cannot be built outside process"):
        open_collector(config, Learner(config).policy)


def test_ray_trains_cartpole_to_the_solved_return_within_100k_steps(local_ray, no_leaks):
    summary = train(tuned_config("CartPole-v1", backend="ray", seed=1, progress=False, eval_episodes=10))
    assert summary["env_steps"] <= 100_000 + 2048
    assert summary["eval_return_mean"] >= 475, summary


def test_options_that_cannot_work_are_refused_in_one_sentence(monkeypatch):
    with pytest.raises(ConfigError, match="central inference runs with the local backend only"):
        ray_config(backend="ray", inference="central")
    with pytest.raises(ConfigError, match="backend must be local or ray, got 'slurm'"):
        ray_config(backend="slurm")
    unreachable = ray_config(backend="ray", ray_address="127.0.0.1:1")
    with pytest.raises(ConfigError, match=r"nothing answers at the Ray address '127\.0\.0\.1:1'; start the cluster"):
        open_collector(unreachable, Learner(unreachable).policy)
    monkeypatch.setitem(sys.modules, "ray", None)
    config = ray_config(backend="ray")
    with pytest.raises(ConfigError, match=r'install prl\'s ray extra: pip install -e "\.\[ray\]"'):
        open_collector(config, Learner(config).policy)


def test_the_local_ray_instance_claims_only_the_cpus_its_actors_ask_for():
    def options(**given):
        return local_ray_options(from_flat({"backend": "ray", "workers": 3, **given}))

    assert options()["num_cpus"] == 3, "not every core of the machine: two runs side by side must not oversubscribe it"
    assert options(ray_worker_cpus=0.5)["num_cpus"] == 2
    assert options(workers=1, ray_worker_cpus=0.25)["num_cpus"] == 1
    assert options()["include_dashboard"] is False, "no web port opened for the run's own instance"
