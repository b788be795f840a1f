"""ActorPool: slot contents, autoreset handling, weight versions, errors and clean shutdown."""

import copy
import functools
import os
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import toy_envs
from conftest import collect_twice, on_device, shm_entries

from prl import ActorPool, Config, ConfigError, Learner, WorkerError
from prl.config import from_flat


def toy_config(**options) -> Config:
    defaults = dict(
        workers=2, envs_per_worker=3, rollout_steps=8, steps=1000, minibatch_size=16, progress=False, seed=3
    )
    defaults.update(options)
    return from_flat(defaults)


INFERENCE = pytest.mark.parametrize("inference", ["worker", "central"])
"""Each worker acts with its own copy of the policy, or one server acts for all (`prl.collection.central`)."""


@INFERENCE
def test_batch_shapes_env_ids_and_versions(device, inference, no_leaks):
    config = toy_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5), device=device, inference=inference)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        assert pool.inference == inference
        batch = pool.collect(learner.device)  # gathered onto the learner's device (pinned copies on CUDA)
        assert batch.obs.device == learner.device
        assert batch.obs.shape == (9, 6, 2)
        assert batch.actions.shape == (8, 6, 1)
        assert batch.values.shape == (9, 6)
        for name in ("logprobs", "rewards", "terminated", "truncated", "final_values", "episode_returns"):
            assert getattr(batch, name).shape == (8, 6), name
        assert batch.env_ids.tolist() == list(range(6))
        assert batch.worker_ids.tolist() == [0, 1]
        assert batch.policy_versions.tolist() == [0, 0]
        for name in ("obs", "actions", "logprobs", "values", "rewards", "final_values"):
            assert not torch.isnan(getattr(batch, name)).any(), f"{name} holds unwritten entries"

        learner.update(batch)
        assert pool.publish(learner.policy) == 1
        second = pool.collect(learner.device)
        assert second.policy_versions.tolist() == [1, 1]
        # Each env carries on where the previous rollout stopped.
        assert torch.equal(second.obs[0], batch.obs[-1])
        # Rollouts are collected with the weights just published: the learner scores them exactly.
        _, logprob, _, value = learner.policy.get_action_and_value(
            second.obs[:-1].reshape(48, 2), second.actions.reshape(48, 1)
        )
        assert torch.allclose(logprob, second.logprobs.reshape(-1), atol=1e-5)
        assert torch.allclose(value, second.values[:-1].reshape(-1), atol=1e-5)


@INFERENCE
def test_autoreset_never_yields_dummy_steps_and_truncation_bootstraps(inference, no_leaks):
    config = toy_config(
        env=functools.partial(toy_envs.CountingEnv, terminate_at=4, truncate_at=6),
        workers=1,
        envs_per_worker=2,
        inference=inference,
    )
    _, _, batch = collect_twice(config)
    counts = batch.obs[..., 0]
    # Terminates after 4 steps: the count runs 0,1,2,3 then the reset observation 0 follows at once.
    assert torch.equal(counts[:, 0], torch.tensor([0.0, 1, 2, 3, 0, 1, 2, 3, 0]))
    assert (batch.rewards == 1.0).all(), "every stored step must be a real transition"
    assert batch.terminated[:, 0].nonzero().flatten().tolist() == [3, 7]
    assert not batch.truncated.any()
    assert (batch.episode_returns[3, 0] == 4.0) and torch.isnan(batch.episode_returns[2, 0])
    assert batch.episode_lengths[:, 0].nan_to_num(0).tolist() == [0, 0, 0, 4, 0, 0, 0, 4]

    config = toy_config(
        env=functools.partial(toy_envs.CountingEnv, truncate_at=3), workers=1, envs_per_worker=2, inference=inference
    )
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
    truncated_steps = batch.truncated[:, 0].nonzero().flatten().tolist()
    assert truncated_steps == [2, 5] and not batch.terminated.any()
    tag = float(batch.obs[0, 0, 1])
    final_value = learner.policy.get_value(*on_device(learner.policy, torch.tensor([[3.0, tag]]))).item()
    assert torch.allclose(batch.final_values[truncated_steps, 0], torch.tensor(final_value), atol=1e-5)
    assert (batch.final_values[~batch.truncated] == 0).all()


@pytest.mark.parametrize("kind", ["multi_discrete", "box"])
def test_other_action_spaces_produce_valid_actions(kind, no_leaks):
    config = toy_config(env=functools.partial(toy_envs.CountingEnv, terminate_at=5, action_kind=kind), workers=1)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
    assert batch.actions.shape == (8, 3, 2)
    if kind == "multi_discrete":
        assert set(batch.actions[..., 0].unique().tolist()) <= {0.0, 1.0}
        assert set(batch.actions[..., 1].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    stats = learner.update(batch)
    assert np.isfinite(stats["policy_loss"])


def test_an_env_that_keeps_failing_stops_the_run_after_the_restart_budget(no_leaks):
    config = toy_config(env=functools.partial(toy_envs.CountingEnv, fail_at=5), max_worker_restarts=2)
    learner = Learner(config)
    pool = ActorPool(config, learner.policy)
    pids = pool.pids
    with pytest.warns(UserWarning, match="raised RuntimeError: toy env failure"):
        with pytest.raises(
            WorkerError, match=r"worker \d failed 3 times within 300 s \(last: raised RuntimeError: toy env failure\)"
        ):
            pool.collect()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


@pytest.mark.parametrize("inference", ["worker", "central"])
def test_an_observation_that_breaks_its_space_after_the_first_reset_stops_collection_in_one_sentence(
    inference, no_leaks
):
    config = toy_config(env=toy_envs.ShrinkingObsEnv, inference=inference)
    pool = ActorPool(config, Learner(config).policy)
    pids = pool.pids
    with pytest.raises(
        ConfigError, match=r"returned an observation of shape \(1,\), but its observation space declares \(2,\)"
    ):
        pool.collect()
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_mismatched_spaces_in_worker_are_a_config_error(no_leaks):
    config = toy_config(env=toy_envs.CountingEnv)
    learner = Learner(config)
    config_with_other_env = toy_config(env=functools.partial(toy_envs.CountingEnv, action_kind="box"))
    with pytest.raises(ConfigError, match="different spaces"):
        ActorPool(config_with_other_env, learner.policy)


def test_close_leaves_no_worker_alive_and_is_idempotent(no_leaks):
    config = toy_config(env=toy_envs.CountingEnv)
    learner = Learner(config)
    before = shm_entries()
    pool = ActorPool(config, learner.policy)
    pids = pool.pids
    assert all(psutil.pid_exists(pid) for pid in pids)
    pool.close()
    pool.close()
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert not shm_entries() - before, "close() must release every shared-memory entry at once"
    with pytest.raises(RuntimeError, match="closed"):
        pool.collect()


@pytest.mark.parametrize("inference, server", [("worker", "thread"), ("central", "thread"), ("central", "process")])
def test_a_worker_killed_mid_rollout_is_replaced_and_collection_goes_on(inference, server, no_leaks):
    # Overlap mode: when collect() returns, every worker is already in its next rollout.
    config = toy_config(
        env=functools.partial(toy_envs.CountingEnv, terminate_at=5),
        mode="overlap",
        rollout_steps=256,
        steps=4096,
        inference=inference,
        inference_server=server,  # a server process gets the replacement's pipe by file descriptor
    )
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        killed = pool.pids[1]
        psutil.Process(killed).kill()
        with pytest.warns(UserWarning, match="worker 1 died"):
            batch = pool.collect()
        assert pool.restarts == 1 and pool.pids[1] != killed
        assert batch.worker_ids.tolist() == [0, 1] and not torch.isnan(batch.rewards).any()
        assert not torch.isnan(pool.collect().logprobs).any(), "the replacement acts in every mode"


@INFERENCE
def test_overlap_mode_collects_with_weights_exactly_one_update_old(inference, no_leaks):
    config = toy_config(
        env=functools.partial(toy_envs.CountingEnv, terminate_at=5), mode="overlap", inference=inference
    )
    learner = Learner(config)
    snapshots = {0: copy.deepcopy(learner.policy)}
    with ActorPool(config, learner.policy) as pool:
        versions = []
        for update in range(4):
            batch = pool.collect()
            versions.append(batch.policy_versions.tolist())
            stats = learner.update(batch)
            assert stats["policy_lag"] == (0 if update == 0 else 1)
            pool.publish(learner.policy)
            snapshots[update + 1] = copy.deepcopy(learner.policy)
            with pytest.raises(RuntimeError, match="publish\\(\\) was called twice"):
                pool.publish(learner.policy)
        # Batch 0 and batch 1 (collected during update 0) act with version 0; then batch b with b - 1.
        assert versions == [[0, 0], [0, 0], [1, 1], [2, 2]]
        # The weights that collected a batch score it exactly.
        _, logprob, _, value = snapshots[2].get_action_and_value(
            *on_device(snapshots[2], batch.obs[:-1].reshape(48, 2), batch.actions.reshape(48, 1))
        )
        assert torch.allclose(logprob.cpu(), batch.logprobs.reshape(-1), atol=1e-5)
        assert torch.allclose(value.cpu(), batch.values[:-1].reshape(-1), atol=1e-5)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this OS")
def test_leak_checks_count_only_what_prl_or_torch_create():
    shm = Path("/dev/shm")
    ours = shm / f"torch_{os.getpid()}_leak_check"
    another_program = shm / f"another-program-{os.getpid()}"
    another_torch_user = shm / "torch_1_leak_check"  # PID 1 is alive and not a child of this test
    for path in (ours, another_program, another_torch_user):
        path.touch()
    try:
        entries = shm_entries()
        assert ours.name in entries
        assert another_program.name not in entries and another_torch_user.name not in entries
    finally:
        for path in (ours, another_program, another_torch_user):
            path.unlink()
