"""Learner updates: on-policy first minibatch, early stopping, lr schedule, and statistics shared with workers."""

import functools

import pytest
import torch
import toy_envs
from conftest import on_device

from prl import ActorPool, Learner
from prl.config import from_flat
from prl.run.checkpoint import load_checkpoint, save_checkpoint


def make_config(**options):
    defaults = dict(
        env=functools.partial(toy_envs.CountingEnv, terminate_at=7, action_kind="box"),
        workers=2,
        envs_per_worker=4,
        rollout_steps=16,
        steps=1280,
        minibatch_size=32,
        progress=False,
    )
    return from_flat({**defaults, **options})


@pytest.fixture
def first_batch():
    config = make_config()
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        return pool.collect()


def test_single_full_minibatch_has_ratio_exactly_one(first_batch, device, first_log_ratios):
    learner = Learner(make_config(epochs=1, minibatch_size=128, device=device))
    stats = learner.update(first_batch)
    (log_ratios,) = first_log_ratios
    assert log_ratios.numel() == 128, "one minibatch holds the whole batch"
    # Directly, not through approx_kl: a log-ratio of 1e-3 still gives an approx_kl below 1e-6.
    assert float(log_ratios.abs().max()) <= 1e-5, "the workers' log-probs must be the learner's"
    assert stats["clipfrac"] == 0.0
    assert learner.updates == 1 and learner.env_steps == 128


def test_target_kl_stops_the_epochs_early(first_batch):
    assert Learner(make_config(epochs=8, lr=0.05)).update(first_batch)["epochs"] == 8
    assert Learner(make_config(epochs=8, lr=0.05, target_kl=1e-9)).update(first_batch)["epochs"] == 1


def test_learning_rate_anneals_linearly_to_zero(first_batch):
    learner = Learner(make_config(lr=1e-3))
    rates = [learner.update(first_batch)["lr"] for _ in range(10)]
    assert rates[0] == pytest.approx(1e-3) and rates[5] == pytest.approx(0.5e-3)
    assert learner.current_lr() == 0.0
    constant = Learner(make_config(lr=1e-3, anneal_lr=False))
    assert {constant.update(first_batch)["lr"] for _ in range(3)} == {1e-3}


def test_observation_statistics_travel_to_the_workers(device, no_leaks):
    config = make_config(normalize_obs=True, normalize_reward=True, device=device)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
        learner.update(batch)
        raw = batch.obs[:-1].reshape(-1, 2)
        assert torch.allclose(learner.policy.obs_normalizer.mean.cpu(), raw.mean(0), atol=1e-3)
        pool.publish(learner.policy)
        second = pool.collect()
    _, logprob, _, value = learner.policy.get_action_and_value(
        *on_device(learner.policy, second.obs[:-1].reshape(-1, 2), second.actions.reshape(-1, 2))
    )
    assert torch.allclose(logprob.cpu(), second.logprobs.reshape(-1), atol=1e-4)
    assert torch.allclose(value.cpu(), second.values[:-1].reshape(-1), atol=1e-5)


def test_checkpoint_round_trip_restores_counters_and_weights(first_batch, tmp_path, device):
    config = make_config(normalize_reward=True, device=device)
    learner = Learner(config)
    learner.update(first_batch)
    save_checkpoint(tmp_path / "checkpoint.pt", {"learner": learner.state_dict(), "config": config.to_dict()})
    restored = Learner(config)
    restored.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt")["learner"])
    assert restored.updates == 1 and restored.env_steps == learner.env_steps
    for (name, a), b in zip(learner.policy.state_dict().items(), restored.policy.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(restored.reward_scaler.returns, learner.reward_scaler.returns)
    assert learner.update(first_batch)["policy_loss"] == restored.update(first_batch)["policy_loss"]


def test_a_non_finite_loss_discards_the_update_and_keeps_the_last_good_weights(first_batch, device):
    learner = Learner(make_config(device=device, normalize_reward=True))
    learner.update(first_batch)
    before = {name: value.clone() for name, value in learner.policy.state_dict().items()}
    scaler_before = learner.reward_scaler.state_dict()
    adam_steps = learner.optimizer.steps
    poisoned = first_batch._replace(rewards=first_batch.rewards.clone().fill_(float("inf")))
    with pytest.warns(UserWarning, match="update 2 produced a non-finite loss or gradient; its changes were discarded"):
        stats = learner.update(poisoned)
    assert stats["skipped_update"] == 1 and learner.updates == 2
    assert learner.optimizer.steps == adam_steps
    for name, value in learner.policy.state_dict().items():
        assert torch.equal(value, before[name]), name
    scaler_after = learner.reward_scaler.state_dict()
    assert scaler_after["count"] == scaler_before["count"], "the discarded batch must not reach the reward statistics"
    assert torch.equal(scaler_after["var"], scaler_before["var"])
    assert learner.update(first_batch)["skipped_update"] == 0


@pytest.mark.parametrize("env", [toy_envs.CueImageEnv, toy_envs.ImageAndVectorEnv], ids=["image", "dict"])
def test_workers_acting_with_the_torch_policy_give_a_first_ratio_of_exactly_one(
    env, device, no_leaks, first_log_ratios
):
    # Images and Dicts are acted on by the torch policy in the workers (not the numpy copy).
    config = make_config(env=env, epochs=1, minibatch_size=128, normalize_obs=True, device=device)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect()
    assert isinstance(batch.obs, dict) and all(leaf.shape[:2] == (17, 8) for leaf in batch.obs.values())
    stats = learner.update(batch)
    (log_ratios,) = first_log_ratios
    assert log_ratios.numel() == 128 and float(log_ratios.abs().max()) <= 1e-5
    assert stats["clipfrac"] == 0.0
