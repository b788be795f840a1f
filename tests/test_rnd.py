"""Random Network Distillation: novelty detection, what trains and what stays frozen, non-episodic returns."""

import functools

import torch
import toy_envs

from prl import PPO, AsyncPPO, Learner, tuned_config
from prl.collection.buffers import Batch
from prl.learning.optim import Adam
from prl.learning.rnd import RND
from prl.run.checkpoint import load_checkpoint, save_checkpoint
from prl.run.cli import parse_config


def test_prediction_error_falls_on_seen_observations_and_stays_high_on_novel_ones():
    torch.manual_seed(0)
    rnd = RND(obs_dim=2, hidden_sizes=(16,), activation="tanh")
    seen = torch.randn(256, 2) * 0.1
    novel = torch.randn(256, 2) * 0.1 + torch.tensor([4.0, -4.0])
    rnd.obs_normalizer.update(torch.cat([seen, novel]))
    optimizer = Adam([p for p in rnd.parameters() if p.requires_grad], lr=3e-3)
    before = rnd.prediction_error(seen).mean().item()
    for _ in range(300):
        optimizer.zero_grad()
        rnd.predictor_loss(seen, 1.0, torch.Generator().manual_seed(0)).backward()
        optimizer.step()
    after_seen = rnd.prediction_error(seen).mean().item()
    after_novel = rnd.prediction_error(novel).mean().item()
    assert after_seen < 0.2 * before
    assert after_novel > 5 * after_seen


def fake_batch(steps=8, envs=4, terminated=False):
    generator = torch.Generator().manual_seed(1)
    ended = torch.zeros(steps, envs, dtype=torch.bool)
    ended[3, 1] = terminated
    return Batch(
        obs=torch.randn(steps + 1, envs, 2, generator=generator),
        actions=torch.randint(0, 3, (steps, envs, 1)).float(),
        logprobs=torch.full((steps, envs), -1.1),
        values=torch.zeros(steps + 1, envs),
        rewards=-torch.ones(steps, envs),
        terminated=ended,
        truncated=torch.zeros(steps, envs, dtype=torch.bool),
        final_values=torch.zeros(steps, envs),
        episode_returns=torch.full((steps, envs), float("nan")),
        episode_lengths=torch.full((steps, envs), float("nan")),
        policy_versions=torch.zeros(2, dtype=torch.long),
        worker_ids=torch.arange(2),
        env_ids=torch.arange(envs),
    )


def rnd_learner(**options):
    env = functools.partial(toy_envs.CountingEnv, terminate_at=5)
    return Learner(
        tuned_config(
            env, workers=2, envs_per_worker=2, rollout_steps=8, minibatch_size=16, steps=64, rnd=True, **options
        )
    )


def on_learner(learner, batch):
    """The batch on the learner's device, as `Learner.update` would move it."""
    return batch.to(learner.device)


def test_update_trains_predictor_and_intrinsic_head_but_never_the_target(device):
    learner = rnd_learner(device=device)
    target = [p.clone() for p in learner.rnd.target.parameters()]
    predictor = [p.clone() for p in learner.rnd.predictor.parameters()]
    head = [p.clone() for p in learner.rnd.value_head.parameters()]
    stats = learner.update(fake_batch())
    assert stats["intrinsic_reward"] > 0 and stats["rnd_loss"] > 0 and "int_value_loss" in stats
    assert all(torch.equal(a, b) for a, b in zip(target, learner.rnd.target.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(predictor, learner.rnd.predictor.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(head, learner.rnd.value_head.parameters()))


def test_intrinsic_returns_ignore_episode_ends(device):
    plain, ended = rnd_learner(device=device), rnd_learner(device=device)
    advantages, returns, _ = plain._intrinsic(on_learner(plain, fake_batch(terminated=False)))
    advantages_ended, returns_ended, _ = ended._intrinsic(on_learner(ended, fake_batch(terminated=True)))
    assert torch.equal(advantages, advantages_ended) and torch.equal(returns, returns_ended)


def test_rnd_state_survives_a_checkpoint(tmp_path, device):
    learner = rnd_learner(device=device)
    learner.update(fake_batch())
    save_checkpoint(tmp_path / "c.pt", {"learner": learner.state_dict(), "config": learner.config.to_dict()})
    restored = rnd_learner(device=device)
    restored.load_state_dict(load_checkpoint(tmp_path / "c.pt")["learner"])
    for (name, a), b in zip(learner.rnd.state_dict().items(), restored.rnd.state_dict().values()):
        assert torch.equal(a, b), name
    assert restored.int_scaler.count == learner.int_scaler.count


def test_rnd_is_reachable_from_the_command_line_and_the_original_front():
    config = parse_config(["--env", "MountainCar-v0", "--rnd", "--int-coef", "3", "--out", "x"])
    assert config.ppo.rnd and config.ppo.int_coef == 3.0
    ppo = PPO(
        is_continuous=False, observ_dim=2, action_dim=3, use_RND=True, beta=0.5, batch_size=256, mini_batch_size=64
    )
    front = AsyncPPO(env="MountainCar-v0", ppo=ppo, num_envs=4, steps=512).config()
    assert front.ppo.rnd and front.ppo.int_coef == 0.5
