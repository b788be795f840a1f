"""Async mode: the slot queue, batches from whichever workers finish first, lag, its correction, and its faults."""

import functools
import json
import os
import time

import psutil
import pytest
import torch
import toy_envs

from prl import ActorPool, Learner, train
from prl.collection.slots import SlotQueue
from prl.config import from_flat


def async_config(**options):
    values = dict(
        workers=2,
        envs_per_worker=2,
        rollout_steps=8,
        steps=320,
        minibatch_size=16,
        progress=False,
        eval_episodes=0,
        seed=3,
        mode="async",
        env=functools.partial(toy_envs.CountingEnv, terminate_at=5),
    )
    return from_flat({**values, **options})


def test_the_slot_queue_gives_free_slots_to_the_least_loaded_workers_and_takes_the_first_reported():
    queue = SlotQueue(async_config(workers=2, slots_per_worker=2))
    assert queue.hand_out() == [(0, 0), (1, 1), (0, 2), (1, 3)]
    assert queue.hand_out() == [], "two requested slots per worker at most: backpressure"
    queue.reported(1, 1)
    assert not queue.batch_ready()
    queue.reported(1, 3)  # worker 1 is the faster: its two rollouts make the batch
    assert queue.batch_ready() and queue.busy(0) and not queue.busy(1)
    assert queue.take() == [1, 3]
    assert queue.hand_out() == [(1, 1), (1, 3)], "the freed slots go to the worker with room"
    assert queue.failed(0) == 0 and queue.outstanding(0) == [2, 0], "a failed rollout goes behind the queued one"
    with pytest.raises(RuntimeError, match="was not filling"):
        queue.reported(0, 0)
    queue.reported(0, 2)
    queue.reported(1, 1)
    assert queue.take() == [2, 1], "columns in worker order"


def test_in_sync_mode_the_queue_is_one_slot_per_worker_taken_in_worker_order():
    queue = SlotQueue(async_config(mode="sync"))
    assert queue.hand_out() == [(0, 0), (1, 1)]
    queue.reported(1, 1)
    queue.reported(0, 0)
    assert queue.take() == [0, 1]


def slow_in_one_worker(tmp_path, delay=0.02):
    """An env that sleeps `delay` per step in the first worker process that builds one."""
    return functools.partial(toy_envs.SlowInOneWorker, str(tmp_path / "slow"), os.getpid(), delay)


def test_a_batch_comes_from_whichever_workers_finish_first_and_acts_with_the_newest_weights(tmp_path, no_leaks):
    config = async_config(env=slow_in_one_worker(tmp_path), envs_per_worker=1)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        first = pool.collect()
        slow = 1 - int(first.worker_ids[0])
        assert first.worker_ids.tolist() == [1 - slow] * 2, "the fast worker's two rollouts make the first batch"
        assert first.env_ids.tolist() == [1 - slow] * 2 and first.policy_versions.tolist() == [0, 0]
        # Its two rollouts are one env's consecutive ones, in time order.
        assert torch.equal(first.obs[0, 1], first.obs[-1, 0])
        learner.update(first)
        assert pool.publish(learner.policy) == 1  # hands the two slots back out, with version 1
        seen = []
        for _ in range(4):
            batch = pool.collect()
            seen += batch.worker_ids.tolist()
            assert (batch.step_versions == batch.policy_versions.repeat_interleave(1)[None, :]).all()
            stats = learner.update(batch)
            assert stats["policy_lag_min"] >= 0 and stats["policy_lag"] <= 2
            pool.publish(learner.policy)
        assert seen.count(1 - slow) > seen.count(slow), "no barrier waits for the slow worker"


def test_central_inference_writes_the_version_of_every_step(no_leaks):
    config = async_config(inference="central", inference_server="thread")
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        for update in range(3):
            batch = pool.collect()
            assert (batch.step_versions >= 0).all() and (batch.step_versions <= update).all()
            assert (
                batch.policy_versions.tolist()
                == batch.step_versions.min(dim=0).values.reshape(-1, 2).min(dim=1).values.tolist()
            )
            learner.update(batch)
            pool.publish(learner.policy)


def logged(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def compared(record):
    return {key: value for key, value in record.items() if not key.endswith("_s") and key != "steps_per_s"}


def test_with_one_slot_per_worker_async_mode_takes_turns_exactly_as_sync(tmp_path, no_leaks):
    sync = train(async_config(mode="sync", out=str(tmp_path / "sync")))
    same = train(async_config(slots_per_worker=1, correction="none", out=str(tmp_path / "async")))
    assert same["episode_return_mean"] == sync["episode_return_mean"]
    assert [compared(r) for r in logged(tmp_path / "async")] == [compared(r) for r in logged(tmp_path / "sync")]
    assert {r["policy_lag"] for r in logged(tmp_path / "async")} == {0}


def test_vtrace_on_lag_zero_batches_learns_what_gae_with_lambda_one_learns(tmp_path, no_leaks):
    sync = async_config(mode="sync", gae_lambda=1.0)
    train(sync.replace(out=str(tmp_path / "sync")))
    train(sync.replace(mode="async", slots_per_worker=1, correction="vtrace", out=str(tmp_path / "vtrace")))
    for gae, vtrace in zip(logged(tmp_path / "sync"), logged(tmp_path / "vtrace"), strict=True):
        for key in ("policy_loss", "value_loss", "approx_kl", "explained_variance", "episode_return_mean"):
            assert vtrace[key] == pytest.approx(gae[key], rel=1e-3, abs=1e-5), key
        assert vtrace["importance_ratio"] == pytest.approx(1.0, abs=1e-4)


def test_a_worker_killed_with_two_rollouts_owed_is_replaced_and_both_are_filled(no_leaks):
    config = async_config(rollout_steps=256, steps=4096)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)  # both workers now owe two rollouts again
        killed = pool.pids[1]
        psutil.Process(killed).kill()
        with pytest.warns(UserWarning, match="worker 1 died"):
            # Worker 0 fills the freed slots while the replacement starts, so how many batches pass
            # before it reports depends on the machine; it must report within a bounded number.
            for _ in range(100):
                batch = pool.collect()
                assert not torch.isnan(batch.rewards).any() and not torch.isnan(batch.logprobs).any()
                pool.publish(learner.policy)
                if 1 in batch.worker_ids.tolist():
                    break
        assert pool.restarts == 1 and pool.pids[1] != killed
        assert 1 in batch.worker_ids.tolist(), "the replacement fills the rollouts its predecessor owed"


def test_a_worker_that_hangs_while_the_other_makes_every_batch_is_still_killed_and_replaced(tmp_path, no_leaks):
    config = async_config(env=functools.partial(toy_envs.HangingEnv, str(tmp_path / "hung")), worker_timeout=2.0)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pids = pool.pids
        started = time.monotonic()
        with pytest.warns(UserWarning, match=r"worker \d sent no rollout within 2 s, so it was killed"):
            while pool.restarts == 0 and time.monotonic() - started < 30:
                pool.collect()
                pool.publish(learner.policy)
        assert (tmp_path / "hung").exists() and pool.restarts == 1
        assert len(set(pool.pids) - set(pids)) == 1, "one replacement"
        replaced = next(iter(set(pool.pids) - set(pids)))
        index = pool.pids.index(replaced)
        while index not in pool.collect().worker_ids.tolist():  # the replacement fills rollouts once it is up
            assert time.monotonic() - started < 60, "the replacement never filled a rollout"
            pool.publish(learner.policy)


def test_an_env_that_raises_once_in_async_mode_is_rebuilt_and_training_completes(tmp_path, no_leaks):
    env = functools.partial(toy_envs.FailOnceEnv, str(tmp_path / "failed"))
    with pytest.warns(UserWarning, match="raised RuntimeError: a one-off env failure"):
        summary = train(async_config(env=env, out=str(tmp_path / "run")))
    assert summary["env_steps"] == 320 and logged(tmp_path / "run")[-1]["worker_restarts"] == 1


def test_steps_older_than_max_policy_lag_are_left_out_of_the_loss(no_leaks):
    config = async_config(max_policy_lag=1, slots_per_worker=3, batch_rollouts=2)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
    learner.updates = 2  # as if two updates had happened since the batch's weights (version 0) acted
    before = [p.detach().clone() for p in learner.policy.parameters()]
    stats = learner.update(batch)
    assert stats["stale_fraction"] == 1.0 and stats["policy_lag_min"] == 2 and stats["gradient_steps"] == 0
    assert all(torch.equal(a, b) for a, b in zip(before, learner.policy.parameters())), "nothing learned from them"
    mixed = batch._replace(policy_versions=torch.tensor([1, 0]), step_versions=None)
    stats = learner.update(mixed)  # lags 2 and 3 now: every step is stale again
    assert stats["stale_fraction"] == 1.0
    learner.updates = 1
    stats = learner.update(mixed)  # lags 0 and 1
    assert stats["stale_fraction"] == 0.0 and stats["gradient_steps"] > 0


def test_async_mode_trains_cartpole_to_a_high_evaluation_within_100k_steps(no_leaks):
    from prl import tuned_config

    # Seeds 1 to 5 ended at 492.7 to 500 here (10 seeds: 9 at 475 or more, the lowest 434.5); async runs
    # depend on timing, so the bound keeps a margin below the benchmark's 475.
    summary = train(tuned_config("CartPole-v1", mode="async", seed=1, progress=False))
    assert summary["eval_return_mean"] >= 450


def test_a_seeded_async_run_gives_each_env_the_first_rollout_a_sync_run_collects(no_leaks):
    # Which rollouts share a batch depends on timing, but each env's seeds and its first weights do not.
    firsts = {}
    for mode in ("sync", "async"):
        config = async_config(mode=mode)
        learner = Learner(config)
        with ActorPool(config, learner.policy) as pool:
            rollouts: dict = {}
            while len(rollouts) < config.workers:
                batch = pool.collect()
                owners = batch.worker_ids.repeat_interleave(config.envs_per_worker).tolist()
                for worker in set(owners) - set(rollouts):
                    # A worker's columns are in the order it filled them: its earliest rollout comes first.
                    columns = [column for column, owner in enumerate(owners) if owner == worker][
                        : config.envs_per_worker
                    ]
                    rollouts[worker] = (batch.obs[:, columns], batch.actions[:, columns], batch.rewards[:, columns])
                pool.publish(learner.policy)
        firsts[mode] = rollouts
    for worker in range(2):
        for sync_part, async_part in zip(firsts["sync"][worker], firsts["async"][worker]):
            assert torch.equal(sync_part, async_part), f"worker {worker}'s first rollout differs"


@pytest.mark.parametrize(
    "options",
    [
        dict(recurrent="lstm"),
        dict(recurrent="gru", inference="central", inference_server="thread"),
        dict(env="prl/IllegalMoves-v0", rollout_steps=16, steps=640),
        dict(env=toy_envs.ToyAgents, envs_per_worker=6, rollout_steps=16, steps=1000, minibatch_size=32),
        dict(env=functools.partial(toy_envs.ToyAgents, masked=True), envs_per_worker=6, minibatch_size=32),
    ],
    ids=["lstm", "gru-central", "masks", "agents", "masked-agents"],
)
def test_async_mode_trains_recurrent_masked_and_pettingzoo_policies(options, tmp_path, no_leaks):
    summary = train(async_config(out=str(tmp_path / "run"), max_policy_lag=3, **options))
    records = logged(tmp_path / "run")
    assert summary["env_steps"] >= async_config(**options).steps
    assert all(0 <= r["policy_lag_min"] <= r["policy_lag"] for r in records)
    assert all(r["importance_ratio"] > 0 and r["stale_fraction"] <= 1 for r in records)
    assert all(r["skipped_update"] == 0 for r in records), "every update had a finite loss"


def test_an_async_run_resumes_from_its_checkpoint(tmp_path, no_leaks):
    train(async_config(out=str(tmp_path / "run")))
    summary = train(async_config(out=str(tmp_path / "run"), steps=640), resume_from=str(tmp_path / "run"))
    records = logged(tmp_path / "run")
    assert summary["env_steps"] >= 640 and [r["update"] for r in records] == list(range(1, len(records) + 1))


@pytest.mark.parametrize("mode", ["overlap", "async"])
def test_a_learner_busy_for_longer_than_worker_timeout_kills_no_worker_that_reported(mode, no_leaks):
    config = async_config(mode=mode, worker_timeout=1.0)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)
        time.sleep(2.5)  # a long evaluation, say: the workers' reports wait in their pipes
        for _ in range(3):
            pool.collect()
            pool.publish(learner.policy)
        assert pool.restarts == 0
