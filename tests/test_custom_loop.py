"""The original program's custom loop: its example learns CartPole; GAE stays inside each env's episodes."""

import copy
import functools
import json
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import toy_envs
from conftest import run_script

from prl import PPO, EnvVectorizer, VecMemory
from prl import custom_loop as utils
from prl.compat.custom_loop import EpisodeMemory
from prl.learning.ppo import compute_gae

ROOT = Path(__file__).resolve().parents[1]

EVALUATION = """
    from prl import evaluate
    from prl.envs.factory import EnvFactory

    result = evaluate(ppo.policy, EnvFactory("CartPole-v1"), episodes=20, seed=1)
    print("RESULT", json.dumps({"steps": int(pbar.n), "eval": result["return_mean"]}))
"""


def readme_block(name):
    readme = (ROOT / "README.md").read_text()
    block = re.search(rf"<!-- {name}:start -->\n```python\n(.*?)```\n<!-- {name}:end -->", readme, re.S)
    assert block, f"README.md has lost its {name} block"
    return block.group(1)


def test_the_original_custom_loop_learns_cartpole_with_only_its_imports_changed(tmp_path, no_leaks):
    example = readme_block("original-loop")
    assert "from prl import custom_loop as utils" in example
    script = tmp_path / "loop.py"
    script.write_text("import json\n" + example + EVALUATION)
    result, survivors = run_script([script], cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not survivors
    assert "Mean reward" in result.stderr, "the loop's own progress bar runs"
    outcome = json.loads(result.stdout.split("RESULT", 1)[1])
    assert outcome["steps"] == 100_000
    assert outcome["eval"] >= 475, outcome


def run_loop(ppo, env, num_envs, iterations, with_truncation=False, seed=3):
    """The original loop, `iterations` times; returns the statistics of each learn()."""
    vector = EnvVectorizer(env=env, num_envs=num_envs, seed=seed)
    buffer = VecMemory(num_envs=num_envs)
    stats = []
    for _ in range(iterations):
        states = vector.reset()[0]
        while True:
            actions = ppo.get_action(torch.from_numpy(states))
            next_states, rewards, dones, truncates, _ = vector.step(actions)
            extra = dict(truncated=truncates, next_states=next_states) if with_truncation else {}
            utils.buffer_append(
                buffer,
                states,
                actions,
                rewards,
                dones | truncates,
                is_env_terminal=vector.envs_active,
                num_envs=num_envs,
                **extra,
            )
            states = utils.inactive_states_dropout(next_states, dones | truncates)
            vector.envs_active = utils.update_active_environments_list(vector.envs_active, dones | truncates)
            if np.all(vector.envs_active):
                utils.buffer_to_target_buffer_transfer(buffer, ppo.memory)
                assert len(buffer) == 0
                stats.append(ppo.learn())
                assert len(ppo.memory) == 0
                break
    return stats


def reference_advantages(stream, value, gamma, lam):
    """GAE over one env's stream with plain floats, episode by episode."""
    advantages, running = [0.0] * len(stream["states"]), 0.0
    for t in reversed(range(len(stream["states"]))):
        state, done = stream["states"][t], stream["dones"][t]
        last = t == len(stream["states"]) - 1
        if done and stream["truncated"][t] and stream["final_states"][t] is not None:
            next_value, running = value(stream["final_states"][t]), 0.0
        elif done:
            next_value, running = 0.0, 0.0
        elif last:
            next_value, running = value(state), 0.0
        else:
            next_value = value(stream["states"][t + 1])
        delta = stream["rewards"][t] + gamma * next_value - value(state)
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def test_gae_runs_over_each_envs_own_episodes_never_across_envs():
    rng = np.random.default_rng(0)
    buffer = VecMemory(num_envs=3)
    # Env 0: two episodes (a termination, then a time limit with its final state); env 1: one
    # terminated episode; env 2: an episode still running when the memory is handed over.
    endings = {0: [(4, "terminated"), (3, "truncated")], 1: [(6, "terminated")], 2: [(5, None)]}
    for env_index, episodes in endings.items():
        for length, ending in episodes:
            for t in range(length):
                end = t == length - 1 and ending is not None
                buffer.push(
                    env_index,
                    rng.normal(size=2),
                    [0.0],
                    rng.normal(),
                    end,
                    truncated=end and ending == "truncated",
                    final_state=rng.normal(size=2) if end and ending == "truncated" else None,
                )
    memory = EpisodeMemory()
    streams = {i: {name: list(getattr(buffer, name)[i]) for name in utils.FIELDS} for i in range(3)}
    utils.buffer_to_target_buffer_transfer(buffer, memory)
    column = memory.column()

    def value(state):
        return float(1.5 * state[0] - 0.5 * state[1] + 0.2)

    values = torch.tensor([value(s) for s in column.obs], dtype=torch.float64).unsqueeze(1)
    final_values = torch.tensor([value(s) for s in column.final_obs], dtype=torch.float64) * torch.from_numpy(
        column.truncated
    )
    advantages, _ = compute_gae(
        torch.from_numpy(column.rewards).double().unsqueeze(1),
        values,
        torch.from_numpy(column.terminated).unsqueeze(1),
        torch.from_numpy(column.truncated).unsqueeze(1),
        final_values.unsqueeze(1),
        0.9,
        0.8,
    )
    expected = [a for i in range(3) for a in reference_advantages(streams[i], value, 0.9, 0.8)]
    assert advantages[:, 0].tolist() == pytest.approx(expected, abs=1e-5)
    assert column.terminated.sum() == 2 and column.truncated.sum() == 2  # the running episode counts as cut


def test_episodes_split_across_two_transfers_continue_in_the_memory():
    buffer, memory = VecMemory(num_envs=1), EpisodeMemory()
    buffer.push(0, [1.0], [0.0], 1.0, False)
    utils.buffer_to_target_buffer_transfer(buffer, memory)
    buffer.push(0, [2.0], [0.0], 1.0, True)
    utils.buffer_to_target_buffer_transfer(buffer, memory)
    column = memory.column()
    assert column.obs[:2, 0].tolist() == [1.0, 2.0]
    assert column.terminated.tolist() == [False, True] and not column.truncated.any()


def test_the_vectorizer_steps_only_running_envs_and_repeats_with_a_seed():
    env = toy_envs.CountingEnv(terminate_at=2)
    vector = EnvVectorizer(env, num_envs=3, seed=4)
    obs, infos = vector.reset()
    assert obs.shape == (3, 2) and len(infos) == 3 and not vector.envs_active.any()
    vector.envs_active[1] = True  # env 1's episode has ended: it takes no action
    next_obs, rewards, terminated, truncated, _ = vector.step(np.array([0, 2]))
    assert next_obs.shape == (2, 2) and rewards.tolist() == [1.0, 1.0] and not terminated.any()
    with pytest.raises(ValueError, match="step got 3 action\\(s\\) for 2 running env\\(s\\)"):
        vector.step(np.array([0, 0, 0]))
    vector.envs_active[:] = True
    with pytest.raises(RuntimeError, match="every env has finished its episode; call reset\\(\\)"):
        vector.step(np.array([]))
    again = EnvVectorizer(env, num_envs=3, seed=4).reset()[0]
    assert np.array_equal(obs, again), "the same seed gives the same first observations"
    assert len(set(obs[:, 1].tolist())) == 3, "each copy has its own seed"


def test_box_actions_are_clipped_to_the_bounds():
    vector = EnvVectorizer(toy_envs.CountingEnv(action_kind="box"), num_envs=2)
    vector.reset()
    vector.step(np.array([[5.0, -5.0], [0.1, 0.2]]))  # the env asserts its bounds


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: utils.buffer_append(
                VecMemory(4), np.zeros((8, 2)), np.zeros(8), np.zeros(8), np.zeros(8, bool), np.zeros(8, bool), 8
            ),
            "buffer_append got num_envs=8 with a VecMemory of 4 envs and 8 envs_active flags; "
            "create EnvVectorizer and VecMemory with the same num_envs",
        ),
        (
            lambda: utils.buffer_append(
                VecMemory(2), np.zeros((1, 2)), np.zeros(2), np.zeros(2), np.zeros(2, bool), np.zeros(2, bool), 2
            ),
            "buffer_append got 1 states for 2 running env",
        ),
        (
            lambda: PPO(is_continuous=False, observ_dim=4, action_dim=2).learn(),
            "ppo.memory is empty; move the collected transitions in with "
            "utils.buffer_to_target_buffer_transfer\\(buffer, ppo.memory\\) before calling learn\\(\\)",
        ),
        (
            lambda: PPO(is_continuous=False, observ_dim=4, action_dim=2).get_action(torch.zeros(3, 5)),
            "get_action got states with 5 values each, but observ_dim is 4",
        ),
        (lambda: VecMemory(0), "num_envs must be at least 1, got 0"),
    ],
)
def test_wrong_calls_are_one_sentence(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_transfer_target_must_be_ppo_memory():
    with pytest.raises(TypeError, match="the target must be ppo.memory"):
        utils.buffer_to_target_buffer_transfer(VecMemory(1), [])


def assert_on_policy(log_ratios, learns):
    """Each of `learns` updates scored its memory with a ratio of 1 (compared directly: through
    approx_kl, log-ratios of 1e-3 would still pass a 1e-6 tolerance)."""
    assert len(log_ratios) == learns
    assert max(float(ratios.abs().max()) for ratios in log_ratios) <= 1e-5


def test_each_learn_starts_exactly_on_policy(first_log_ratios):
    # One epoch over one full minibatch: the ratio of every sample is 1 if the stored actions
    # are scored as they were sampled.
    ppo = PPO(is_continuous=False, observ_dim=4, action_dim=2, k_epochs=1, mini_batch_size=100_000, batch_size=64)
    stats = run_loop(ppo, gym.make("CartPole-v1"), num_envs=4, iterations=2)
    assert_on_policy(first_log_ratios, learns=2)
    assert all(s["clipfrac"] == 0.0 for s in stats)


def test_continuous_actions_with_action_scaling_and_truncation_bootstrapping(first_log_ratios):
    ppo = PPO(
        is_continuous=True,
        observ_dim=3,
        action_dim=1,
        action_scaling=2.0,
        k_epochs=1,
        mini_batch_size=100_000,
        batch_size=64,
    )
    actions = ppo.get_action(torch.zeros(5, 3))
    assert actions.shape == (5, 1) and actions.dtype == np.float32
    assert ppo.get_action(torch.zeros(0, 3)).shape == (0, 1), "no running env, no action"
    env = gym.make("Pendulum-v1", max_episode_steps=30)
    captured = []
    original_column = EpisodeMemory.column
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpisodeMemory, "column", lambda self: captured.append(original_column(self)) or captured[-1])
        run_loop(ppo, env, num_envs=3, iterations=2, with_truncation=True)
    assert_on_policy(first_log_ratios, learns=2)  # scaled actions are scored in the policy's own units
    column = captured[0]
    assert column.truncated.sum() == 3 and not column.terminated.any(), "Pendulum only ever hits its time limit"
    assert (column.final_obs[column.truncated] != 0).any()
    unscaled = PPO(is_continuous=True, observ_dim=3, action_dim=1, k_epochs=1, mini_batch_size=100_000)
    run_loop(unscaled, env, num_envs=2, iterations=1)
    assert_on_policy(first_log_ratios, learns=3)


def rnd_loop(beta, seed=1, iterations=3):
    """(ppo, the states its loop visited, a copy of its RND from before the first learn) after a
    short MountainCar loop with RND weighted by `beta`."""
    ppo = PPO(is_continuous=False, observ_dim=2, action_dim=3, use_RND=True, beta=beta, mini_batch_size=64, seed=seed)
    untrained = copy.deepcopy(ppo.loop_learner().rnd)
    columns = []
    original_column = EpisodeMemory.column
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpisodeMemory, "column", lambda self: columns.append(original_column(self)) or columns[-1])
        stats = run_loop(ppo, gym.make("MountainCar-v0", max_episode_steps=40), 4, iterations, seed=seed + 2)
    for update in stats:
        assert update["intrinsic_reward"] > 0 and update["rnd_loss"] > 0 and np.isfinite(update["policy_loss"])
    visited = torch.from_numpy(np.concatenate([column.obs for column in columns])).float()
    return ppo, visited, untrained


def test_the_custom_loop_trains_with_rnd():
    ppo, visited, untrained = rnd_loop(beta=0.5)
    assert ppo.config.ppo.rnd and ppo.config.ppo.int_coef == 0.5
    trained = ppo.loop_learner().rnd
    # Judged with the same observation statistics, so that only the predictor's learning counts;
    # three learns bring the visited states' novelty to 0.35-0.42 of an untrained predictor's
    # (seeds 1 to 5), and an untrained one stays at 1.
    untrained.obs_normalizer.load_state_dict(trained.obs_normalizer.state_dict())
    with torch.no_grad():
        novelty = trained.prediction_error(visited).mean() / untrained.prediction_error(visited).mean()
    assert novelty < 0.6, "the intrinsic reward of the states the loop saw falls as RND learns them"


def test_beta_weighs_the_intrinsic_reward_into_the_custom_loops_policy_update():
    # beta 0 keeps everything else (the RND, the random draws): only the intrinsic advantages differ.
    steered, _, _ = rnd_loop(beta=0.5, iterations=1)
    unsteered, _, _ = rnd_loop(beta=0.0, iterations=1)
    weights = unsteered.policy.state_dict()
    changed = [name for name, value in steered.policy.state_dict().items() if not torch.equal(value, weights[name])]
    assert changed, "beta 0.5 must change the policy's update"


def test_a_trained_front_and_the_custom_loop_share_weights(tmp_path):
    ppo = PPO(is_continuous=False, observ_dim=2, action_dim=3, batch_size=64, mini_batch_size=32, k_epochs=1)
    env = functools.partial(toy_envs.CountingEnv, terminate_at=5)
    run_loop(ppo, env(), num_envs=2, iterations=1)
    ppo.save_weights(tmp_path)
    other = PPO(is_continuous=False, observ_dim=2, action_dim=3, seed=9)
    other.load_weights(tmp_path)
    other.get_action(torch.zeros(1, 2))  # builds the loop's learner from the loaded weights
    for name, value in ppo.policy.state_dict().items():
        assert torch.equal(other.policy.state_dict()[name].cpu(), value.cpu()), name
