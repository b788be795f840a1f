"""Central inference (`prl.collection.central`): one server acts for every worker, with the same guarantees as worker mode."""

import functools
import threading

import psutil
import pytest
import torch
import toy_envs
from conftest import collect_twice, on_device

from prl import ActorPool, ConfigError, Learner, WorkerError, train, tuned_config
from prl.collection.buffers import SharedWeights, TrajectoryBuffer
from prl.collection.central import InferenceProcess, env_groups
from prl.collection.pool import resolve_inference
from prl.collection.processes import prestart, worker_context
from prl.config import from_flat


def central_config(**options):
    defaults = dict(
        workers=2,
        envs_per_worker=3,
        rollout_steps=8,
        steps=1000,
        minibatch_size=16,
        progress=False,
        seed=3,
        inference="central",
    )
    return from_flat({**defaults, **options})


def inference_threads() -> list:
    return [thread for thread in threading.enumerate() if thread.name == "prl-inference"]


def test_a_workers_envs_take_turns_in_two_groups():
    assert env_groups(1) == [range(0, 1)]
    assert env_groups(2) == [range(0, 1), range(1, 2)]
    assert env_groups(5) == [range(0, 3), range(3, 5)]


def test_auto_means_worker_inference_on_the_cpu_and_a_bad_value_is_refused():
    config = central_config(inference="auto", env="CartPole-v1")
    assert resolve_inference(config, Learner(config).policy) == "worker"
    image = central_config(inference="auto", env=toy_envs.CueImageEnv, device="cpu")
    assert resolve_inference(image, Learner(image).policy) == "worker", "a CNN on the CPU acts in the workers"
    with pytest.raises(ConfigError, match="inference must be auto, worker or central, got 'gpu'"):
        central_config(inference="gpu")


def test_image_rollouts_are_scored_exactly_by_the_weights_that_acted(no_leaks):
    learner, _, batch = collect_twice(central_config(env=toy_envs.CueImageEnv, encoder="grid"))
    assert batch.obs[""].dtype == torch.uint8 and batch.policy_versions.tolist() == [1, 1]
    obs = batch.obs[""][:-1].reshape(48, *batch.obs[""].shape[2:])
    _, logprob, _, value = learner.policy.get_action_and_value(
        {"": obs.to(learner.device)}, batch.actions.reshape(48, 1).to(learner.device)
    )
    assert torch.allclose(logprob.cpu(), batch.logprobs.reshape(-1), atol=1e-5)
    assert torch.allclose(value.cpu(), batch.values[:-1].reshape(-1), atol=1e-5)
    rewards = batch.rewards.reshape(-1)
    assert set(rewards.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("kind", ["discrete", "box"])
def test_central_rollouts_draw_from_each_workers_seeded_stream_and_repeat_for_the_same_seed(kind, no_leaks):
    batches = []
    for _ in range(2):
        config = central_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5, action_kind=kind))
        learner = Learner(config)
        with ActorPool(config, learner.policy) as pool:
            first = pool.collect()
            learner.update(first)
            pool.publish(learner.policy)
            batch = pool.collect()
            noise = pool.buffer.noise.transpose(0, 1).reshape(8, 6, -1)  # [T, workers x envs, action_dim]
        batches.append(batch)
        # each action is the policy's draw with the noise its worker wrote, whatever the batching
        actions, _, _, _ = learner.policy.get_action_and_value(
            batch.obs[:-1].reshape(48, 2), noise=noise.reshape(48, -1)
        )
        assert torch.allclose(actions, batch.actions.reshape(48, -1), atol=1e-5)
    assert torch.equal(batches[0].obs, batches[1].obs)
    if kind == "discrete":
        assert torch.equal(batches[0].actions, batches[1].actions)
    else:  # a Gaussian action carries the forward pass's last bits, which depend on the batch's size
        assert torch.allclose(batches[0].actions, batches[1].actions, atol=1e-5)


def test_an_env_error_mid_rollout_leaves_no_stale_reply_for_the_next_rollout(tmp_path, no_leaks):
    config = central_config(env=functools.partial(toy_envs.FailOnceEnv, str(tmp_path / "failed"), fail_at=3))
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        with pytest.warns(UserWarning, match="raised RuntimeError: a one-off env failure"):
            first = pool.collect(learner.device)
        assert pool.restarts == 1
        for _ in range(2):  # later rollouts act on their own rows: a stale reply would misalign them
            batch = pool.collect(learner.device)
            _, logprob, _, _ = learner.policy.get_action_and_value(
                *on_device(learner.policy, batch.obs[:-1].reshape(48, 2), batch.actions.reshape(48, 1))
            )
            assert torch.allclose(logprob.cpu(), batch.logprobs.reshape(-1), atol=1e-5)
    assert not torch.isnan(first.rewards).any()


def test_a_failing_server_stops_collection_with_its_error_and_leaves_nothing_running(monkeypatch, no_leaks):
    config = central_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5), inference_server="thread")
    learner = Learner(config)
    pool = ActorPool(config, learner.policy)
    pids = pool.pids

    def broken(requests, conns):
        raise RuntimeError("out of device memory")

    monkeypatch.setattr(pool._server, "_serve", broken)
    with pytest.raises(WorkerError, match="RuntimeError in the inference server: out of device memory"):
        pool.collect()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert not inference_threads()


def test_close_stops_the_inference_thread(no_leaks):
    config = central_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5), inference_server="thread")
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        assert len(inference_threads()) == 1
    assert not inference_threads()


def test_a_server_process_acts_exactly_as_the_server_thread_does(no_leaks):
    env = functools.partial(toy_envs.CountingEnv, terminate_at=5)
    batches = {
        server: collect_twice(central_config(env=env, inference_server=server))[1:] for server in ("thread", "process")
    }
    for thread_batch, process_batch in zip(batches["thread"], batches["process"]):
        for name in ("obs", "actions", "rewards", "policy_versions", "worker_ids"):
            assert torch.equal(getattr(thread_batch, name), getattr(process_batch, name)), name
        for name in ("logprobs", "values", "final_values"):
            assert torch.allclose(getattr(thread_batch, name), getattr(process_batch, name), atol=1e-6), name


def test_a_server_process_that_dies_stops_collection_in_one_sentence_and_leaves_nothing_running(no_leaks):
    config = central_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5), inference_server="process")
    learner = Learner(config)
    pool = ActorPool(config, learner.policy)
    pids = [*pool.pids, pool.server_pid]
    pool.collect()
    psutil.Process(pool.server_pid).kill()
    with pytest.raises(WorkerError, match=r"RuntimeError in the inference server: the inference process ended"):
        pool.collect()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    with pytest.raises(ConfigError, match="inference_server must be thread or process, got 'gpu'"):
        central_config(inference_server="gpu")


def test_a_server_process_that_cannot_start_says_why_and_leaves_nothing_running(no_leaks):
    config = central_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5))
    learner = Learner(config)
    weights = SharedWeights(learner.policy)
    buffer = TrajectoryBuffer(2, 8, 3, learner.policy.spec.obs_layout, learner.policy.spec.action_dim, central=True)
    context = worker_context(config)
    prestart(config)  # the forkserver outlives pools; anything else started here must not
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    server = InferenceProcess(("not a spec",), weights, buffer, "cpu", context)
    with pytest.raises(WorkerError, match="the inference process did not start: TypeError: .*build_policy"):
        server.start()
    left = {child.pid for child in psutil.Process().children(recursive=True) if child.status() != psutil.STATUS_ZOMBIE}
    assert server.pid not in left and not left - before


def test_central_inference_trains_cartpole_to_the_solved_return_within_100k_steps(no_leaks):
    summary = train(tuned_config("CartPole-v1", inference="central", seed=1, progress=False, eval_episodes=10))
    assert summary["env_steps"] <= 100_000 + 2048
    assert summary["eval_return_mean"] >= 475, summary
