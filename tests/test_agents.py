"""Many agents per env: PettingZoo ParallelEnvs as one row per agent (`prl.envs.agents`)."""

import functools

import numpy as np
import psutil
import pytest
import torch
import toy_envs

from prl import ActorPool, ConfigError, Learner, train
from prl.config import from_flat
from prl.envs.agents import PADDING, AgentGroup
from prl.learning.ppo import normalize_advantages, ppo_loss
from prl.run.evaluation import evaluate

SPREAD = "pettingzoo:mpe2.simple_spread_v3"


def agents_config(**options):
    defaults = dict(
        env=toy_envs.ToyAgents,
        workers=2,
        envs_per_worker=6,
        rollout_steps=16,
        steps=1000,
        minibatch_size=32,
        progress=False,
        seed=3,
    )
    defaults.update(options)
    return from_flat(defaults)


def test_a_group_steps_its_agents_together_and_pads_the_rows_of_agents_that_finished():
    group = AgentGroup(toy_envs.ToyAgents(ends=(2, 3, 3)), "toy")
    first = [row.reset(seed=5)[0] for row in group.rows]
    assert [obs.tolist() for obs in first] == [[0, 0, 5], [1, 0, 5], [2, 0, 5]]
    assert group.rows[0].reset(seed=6)[0].tolist() == [0, 0, 6], "a seeded reset asked again starts over"
    assert [row.reset(seed=6)[0].tolist() for row in group.rows[1:]] == [[1, 0, 6], [2, 0, 6]]
    seen = []
    for _ in range(4):
        group.step([0, 1, 2])
        results = [row.step(None) for row in group.rows]
        seen.append([(reward, terminated, info is PADDING) for _, reward, terminated, _, info in results])
        for row, (_, _, terminated, truncated, _) in zip(group.rows, results):
            if terminated or truncated:
                row.reset()
    assert seen[1] == [(1.0, True, False), (2.0, False, False), (3.0, False, False)]  # agent 0 finishes
    assert seen[2] == [(0.0, True, True), (2.0, True, False), (3.0, True, False)]  # padding ends with the env
    assert seen[3][0] == (1.0, False, False), "every agent plays again once the env has reset"
    with pytest.raises(RuntimeError, match="before AgentGroup.step"):
        group.rows[0].step(0)


@pytest.mark.parametrize("inference", ["worker", "central"])
def test_agents_are_rows_with_their_own_episodes_and_dead_agents_count_nothing(inference, no_leaks):
    config = agents_config(inference=inference)
    learner = Learner(config)
    assert learner.spec.agents == 3
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect(learner.device)
        assert batch.obs.shape == (17, 12, 3) and batch.agent_active.shape == (16, 12)
        # Agents 0, 1 and 2 of every env play 3, 5 and 7 steps of each 7-step env episode.
        expected = np.array([[t % 7 < end for t in range(16)] for end in (3, 5, 7)])
        for first in range(0, 12, 3):
            assert (batch.agent_active[:, first : first + 3].T.numpy() == expected).all()
            returns = batch.episode_returns[:, first : first + 3]
            assert [returns[~torch.isnan(returns[:, k]), k].tolist() for k in range(3)] == [
                [3.0] * 2,
                [10.0] * 2,
                [21.0] * 2,
            ]
        assert batch.finished_team_returns() == [34.0] * 8
        assert batch.agent_steps == int(expected.sum()) * 4  # 4 envs of 3 agents
        learner.update(batch)
        assert learner.env_steps == batch.agent_steps, "padding is not counted as steps"
        pool.publish(learner.policy)
        second = pool.collect(learner.device)
        # The learner scores what the workers did exactly (the first ratio of a sync update is 1).
        _, logprob, _, value = learner.policy.get_action_and_value(
            second.obs[:-1].reshape(-1, 3), second.actions.reshape(-1, 1)
        )
        assert torch.allclose(logprob, second.logprobs.reshape(-1), atol=1e-5)
        assert torch.allclose(value, second.values[:-1].reshape(-1), atol=1e-5)


def test_the_loss_with_weights_is_the_loss_of_the_samples_that_count():
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(40, generator=generator) for _ in range(6)]
    new_logprob, old_logprob, advantages, new_values, old_values, returns = inputs
    entropy = torch.rand(40, generator=generator)
    weights = (torch.rand(40, generator=generator) > 0.3).float()
    keep = weights.bool()
    for clip_vloss in (False, True):
        args = (0.2, 0.5, 0.01, clip_vloss)
        weighted = ppo_loss(*[x for x in inputs], entropy, *args, weights=weights)
        kept = ppo_loss(*[x[keep] for x in inputs], entropy[keep], *args)
        for name in weighted._fields:
            assert torch.allclose(getattr(weighted, name), getattr(kept, name), atol=1e-6), name
    assert torch.allclose(
        normalize_advantages(advantages, weights)[keep], normalize_advantages(advantages[keep]), atol=1e-6
    )
    assert (normalize_advantages(advantages, weights)[~keep] == 0).all()


def test_agent_ids_let_one_shared_policy_play_each_agent_its_own_part(no_leaks):
    # Agent k earns 1 for action k: without its id an agent cannot tell which action is its own.
    def run(agent_ids):
        config = agents_config(
            env=functools.partial(toy_envs.ToyAgents, ends=(8, 8, 8), match_id=True),
            agent_ids=agent_ids,
            steps=12_000,
            lr=3e-3,
            eval_episodes=5,
        )
        summary = train(config)
        return summary["eval_return_mean"], summary["eval_team_return_mean"]

    with_ids, team = run(True)
    without, _ = run(False)
    assert with_ids == 8.0 and team == 24.0, "every agent plays its own action at every step"
    assert without <= 8.0 / 3 + 0.5


def test_masked_agents_act_within_their_masks_in_collection_and_evaluation(no_leaks):
    config = agents_config(env=functools.partial(toy_envs.ToyAgents, masked=True))
    learner = Learner(config)
    assert learner.spec.masked
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect(learner.device)
    mask = batch.obs["action_mask"][:-1]
    taken = batch.actions[..., 0].long()
    assert mask.gather(2, taken.unsqueeze(-1)).all(), "no agent ever takes an illegal action"
    result = evaluate(learner.policy, learner_factory(config), episodes=3, seed=0)
    assert len(result["returns"]) == 9 and result["team_return_mean"] == 34.0


def learner_factory(config):
    from prl.envs.factory import EnvFactory

    return EnvFactory(config.env, config.env_kwargs)


@pytest.mark.parametrize("policy", ["lstm", "gru"])
def test_a_recurrent_policy_trains_on_agent_rows(policy, no_leaks):
    config = agents_config(recurrent=policy, inference="central" if policy == "gru" else "worker")
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect(learner.device)
        stats = learner.update(batch)
    assert stats["approx_kl"] >= 0 and np.isfinite(stats["value_loss"])
    # Each agent's state starts afresh with its episodes, and a dead agent's padding from a fresh state too.
    assert batch.episode_starts[:, 2].nonzero().flatten().tolist() == [0, 7, 14]
    assert batch.episode_starts[:, 0].nonzero().flatten().tolist() == [0, 3, 7, 10, 14]


def test_simple_spread_trains_end_to_end_resumes_and_reports_agent_and_team_returns(tmp_path, no_leaks):
    import json

    def spread(out, steps):
        options = dict(env=SPREAD, workers=2, envs_per_worker=6, rollout_steps=25, steps=steps, progress=False)
        return from_flat({**options, "out": str(out), "eval_episodes": 4, "tensorboard": False, "save_every": 1})

    summary = train(spread(tmp_path / "run", 600))
    assert summary["env_steps"] == 600, "12 agent rows x 25 steps x 2 updates, counted in agent-steps"
    assert summary["eval_team_return_mean"] == pytest.approx(3 * summary["eval_return_mean"])
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["team_return_mean"] < 0 and record["episode_length_mean"] == 25
    resumed = train(spread(tmp_path / "more", 1200), resume_from=str(tmp_path / "run"))
    lines = [json.loads(line) for line in (tmp_path / "more" / "metrics.jsonl").read_text().splitlines()]
    assert resumed["env_steps"] == 1200 and [line["update"] for line in lines] == [1, 2, 3, 4]
    assert lines[2]["episodes"] > lines[1]["episodes"] and lines[2]["team_return_mean"] is not None


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(env=toy_envs.ToyMixedSpaces), "have different observation spaces"),
        (dict(env=toy_envs.ToyTurns), "turn-based PettingZoo"),
        (dict(env="pettingzoo:pettingzoo.classic.tictactoe_v3"), "turn-based PettingZoo"),
        (dict(env="pettingzoo:mpe2.no_such_env_v0"), "not installed"),
        (dict(envs_per_worker=4), r"must be a multiple of 3; give --envs-per-worker 3"),
    ],
)
def test_envs_prl_cannot_share_a_policy_in_are_refused_in_one_sentence(options, message):
    with pytest.raises(ConfigError, match=message):
        Learner(agents_config(**options))


def test_an_agents_env_that_crashes_is_rebuilt_and_training_goes_on(tmp_path, no_leaks):
    env = functools.partial(toy_envs.ToyAgents, fail_at=5, flag_file=str(tmp_path / "failed"))
    with pytest.warns(UserWarning, match="raised RuntimeError: toy agents failure; restarting it"):
        summary = train(agents_config(env=env, steps=600, eval_episodes=0))
    assert (tmp_path / "failed").exists() and summary["env_steps"] >= 600


def test_an_agents_worker_killed_or_stuck_is_replaced(tmp_path, no_leaks):
    env = functools.partial(toy_envs.ToyAgents, hang_at=4, flag_file=str(tmp_path / "hung"))
    config = agents_config(env=env, worker_timeout=2.0, mode="overlap")
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        with pytest.warns(UserWarning, match=r"sent no rollout within 2 s, so it was killed"):
            pool.collect()
        killed = pool.pids[0]
        psutil.Process(killed).kill()
        with pytest.warns(UserWarning, match="worker 0 died"):
            batch = pool.collect()
        assert pool.restarts == 2 and batch.agent_steps > 0
        assert not torch.isnan(pool.collect().logprobs).any()
