"""The recurrent core: replaying a rollout equals a plain loop of cells with resets, and equals acting step by step."""

import pytest
import torch

from prl.nn.recurrent import RecurrentCore

T, N, F, H = 12, 5, 3, 4


def rollout(seed: int = 0):
    """Features, a non-zero starting state and episode starts at the first step and inside the rollout."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(T, N, F, generator=generator)
    starts = torch.rand(T, N, generator=generator) < 0.2
    starts[0, 0] = True  # an env that starts an episode with the rollout
    starts[5, 2] = starts[6, 2] = True  # a one-step episode
    return features, starts


def reference(core: RecurrentCore, features, state, starts):
    """A plain loop over steps and envs with torch's cells, written independently of the core."""
    rnn = core.rnn
    cell = (torch.nn.LSTMCell if core.kind == "lstm" else torch.nn.GRUCell)(F, H)
    cell.load_state_dict({name.replace("_l0", ""): value for name, value in rnn.state_dict().items()})
    h = state[:, :H].clone()
    c = state[:, H:].clone() if core.kind == "lstm" else None
    outputs = []
    for t in range(T):
        h = h.clone()  # the previous step's output is kept as it was
        c = c.clone() if c is not None else None
        for env in range(N):
            if starts[t, env]:
                h[env] = 0.0
                if c is not None:
                    c[env] = 0.0
        if core.kind == "lstm":
            h, c = cell(features[t], (h, c))
        else:
            h = cell(features[t], h)
        outputs.append(h)
    final = torch.cat([h, c], dim=-1) if core.kind == "lstm" else h
    return torch.stack(outputs), final


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_replaying_a_rollout_equals_a_plain_loop_of_cells_with_resets(kind):
    torch.manual_seed(1)
    core = RecurrentCore(kind, F, H)
    features, starts = rollout()
    state = torch.randn(N, core.state_size)
    outputs, final = core.replay(features, state, starts)
    expected_outputs, expected_final = reference(core, features, state, starts)
    assert outputs.shape == (T, N, H) and final.shape == (N, core.state_size)
    assert torch.allclose(outputs, expected_outputs, atol=1e-6)
    assert torch.allclose(final, expected_final, atol=1e-6)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_acting_step_by_step_computes_what_the_replay_computes(kind):
    torch.manual_seed(2)
    core = RecurrentCore(kind, F, H)
    features, starts = rollout(seed=3)
    state0 = core.initial_state(N)
    state, stepped = state0, []
    with torch.no_grad():
        for t in range(T):
            output, state = core.step(features[t], state, starts[t])
            stepped.append(output)
        replayed, final = core.replay(features, state0, starts)
    assert float((torch.stack(stepped) - replayed).abs().max()) <= 1e-6
    assert float((state - final).abs().max()) <= 1e-6


def test_an_episode_start_forgets_everything_before_it():
    torch.manual_seed(4)
    core = RecurrentCore("lstm", F, H)
    features, _ = rollout()
    starts = torch.zeros(T, N, dtype=torch.bool)
    starts[7] = True
    with torch.no_grad():
        outputs, _ = core.replay(features, torch.randn(N, core.state_size), starts)
        fresh, _ = core.replay(features[7:], core.initial_state(N), starts[7:])
    assert torch.equal(outputs[7:], fresh), "from the start on, the state before it leaves no trace"
    assert not torch.allclose(outputs[:7], core.replay(features[:7], core.initial_state(N), starts[:7])[0])


def test_gradients_reach_the_weights_and_the_inputs_through_the_whole_sequence():
    core = RecurrentCore("gru", F, H)
    features, starts = rollout()
    starts[:, 4] = False  # an env whose episode spans the whole rollout
    features.requires_grad_(True)
    outputs, _ = core.replay(features, core.initial_state(N), starts)
    outputs[-1].sum().backward()
    assert all(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in core.parameters())
    assert features.grad[0, 4].abs().sum() > 0, "its last output depends on its first input"
    assert features.grad[4, 2].abs().sum() == 0, (
        "env 2 started an episode at steps 5 and 6: nothing before reaches past"
    )


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="lstm or gru, got 'rnn'"):
        RecurrentCore("rnn", F, H)


def recurrent_config(kind: str, **options):
    from prl.config import from_flat

    values = dict(
        env="CartPole-v1",
        workers=2,
        envs_per_worker=3,
        rollout_steps=64,
        minibatch_size=384,
        epochs=1,
        recurrent=kind,
        recurrent_size=16,
        progress=False,
        eval_episodes=0,
        seed=7,
    )
    return from_flat({**values, **options})


@pytest.mark.parametrize("inference", ["worker", "central"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_learners_first_pass_reproduces_the_log_probs_that_acting_produced(
    kind, inference, first_log_ratios, no_leaks
):
    from prl import ActorPool, Learner

    config = recurrent_config(kind, inference=inference)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)
        batch = pool.collect()  # the second rollout starts from carried-over states, not zeros
    assert batch.initial_states is not None and batch.initial_states.abs().sum() > 0
    assert batch.episode_starts is not None and batch.episode_starts[1:].any(), "episodes end inside the rollout"
    learner.update(batch)
    (log_ratios,) = first_log_ratios
    assert log_ratios.numel() == 64 * 6, "one minibatch: every env's whole sequence"
    assert float(log_ratios.abs().max()) <= 1e-5


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_chunks_of_bptt_steps_start_from_the_states_acting_had(kind, first_log_ratios, no_leaks):
    from prl import ActorPool, Learner

    config = recurrent_config(kind, bptt_steps=16)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)
        batch = pool.collect()
    learner.update(batch)
    (log_ratios,) = first_log_ratios
    assert log_ratios.numel() == 64 * 6, "one minibatch: 4 chunks of 16 steps of each of 6 envs"
    assert float(log_ratios.abs().max()) <= 1e-5


def test_a_recurrent_run_trains_evaluates_saves_and_resumes(tmp_path, no_leaks):
    from prl import train
    from prl.run.checkpoint import load_policy

    out = tmp_path / "run"
    config = recurrent_config("lstm", steps=4 * 384, minibatch_size=128, epochs=2, eval_episodes=3, out=str(out))
    summary = train(config)
    assert summary["env_steps"] == 4 * 384 and summary["eval_return_mean"] > 0
    policy, saved = load_policy(out)
    assert policy.core is not None and saved.policy.recurrent == "lstm"
    resumed = train(
        recurrent_config("lstm", steps=6 * 384, minibatch_size=128, epochs=2, eval_episodes=3, out=str(out)),
        resume_from=str(out),
    )
    assert resumed["env_steps"] == 6 * 384


def test_memory_options_it_cannot_take_are_refused_in_one_sentence():
    from prl import ConfigError

    with pytest.raises(ConfigError, match="turn one of --rnd and --recurrent off"):
        recurrent_config("gru", rnd=True)
    with pytest.raises(ConfigError, match="recurrent must be lstm, gru or unset, got 'rnn'"):
        recurrent_config("rnn")
    with pytest.raises(ConfigError, match=r"rollout_steps \(64\) must be a multiple of bptt_steps \(24\)"):
        recurrent_config("lstm", bptt_steps=24)
    with pytest.raises(ConfigError, match="bptt_steps cuts a recurrent policy's sequences"):
        recurrent_config(None, bptt_steps=16)


@pytest.mark.parametrize("inference", ["worker", "central"])
def test_a_killed_worker_of_a_recurrent_pool_is_replaced_and_its_envs_start_fresh(
    inference, first_log_ratios, no_leaks
):
    import time

    import psutil

    from prl import ActorPool, Learner

    config = recurrent_config("gru", inference=inference)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        psutil.Process(pool.pids[0]).kill()
        time.sleep(0.2)
        with pytest.warns(UserWarning, match="worker 0 died"):
            batch = pool.collect()
    assert pool.restarts == 1
    assert batch.episode_starts[0, :3].all() and not batch.initial_states[:3].any(), "the replacement starts afresh"
    assert batch.initial_states[3:].abs().sum() > 0, "the other worker carries its states on"
    learner.update(batch)
    assert float(first_log_ratios[0].abs().max()) <= 1e-5


def test_cartpole_without_velocities_is_solved_with_a_memory_and_not_without(tmp_path, no_leaks):
    from prl import train, tuned_config

    env = "prl/CartPoleNoVel-v1"
    memory = train(tuned_config(env, progress=False, out=str(tmp_path / "lstm")))
    assert memory["eval_return_mean"] >= 475, memory  # seeds 1 to 5: 499.6 to 500
    memoryless = train(tuned_config(env, recurrent=None, progress=False, out=str(tmp_path / "mlp")))
    assert memoryless["eval_return_mean"] < 200, memoryless  # seeds 1 to 3: 41 to 47
