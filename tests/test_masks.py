"""Action masks: where they come from, how the policy acts within them, and that every path keeps them."""

import functools

import numpy as np
import pytest
import torch
import toy_envs

from prl import ActorPool, Config, ConfigError, Learner
from prl.envs import masks
from prl.envs.factory import EnvFactory, make_env, probe_env
from prl.envs.tasks import ILLEGAL_MOVES, best_move
from prl.nn.policy import build_policy


def moves_config(**options):
    from prl.config import from_flat

    values = dict(
        env=ILLEGAL_MOVES,
        workers=2,
        envs_per_worker=3,
        rollout_steps=64,
        minibatch_size=384,
        epochs=1,
        progress=False,
        eval_episodes=0,
        seed=5,
    )
    return from_flat({**values, **options})


def test_the_three_sources_are_found_in_order_and_give_the_same_masks():
    game = probe_env(Config(env=ILLEGAL_MOVES))
    in_info = probe_env(Config(env=toy_envs.MovesMaskedInInfo))
    by_method = probe_env(Config(env=toy_envs.MovesMaskedByMethod))
    assert (game.mask_source, in_info.mask_source, by_method.mask_source) == ("observation", "info", "method")
    assert game.masked and in_info.masked and by_method.masked
    envs = [
        make_env(EnvFactory(ILLEGAL_MOVES)),
        make_env(EnvFactory(toy_envs.MovesMaskedInInfo), mask_source="info"),
        make_env(EnvFactory(toy_envs.MovesMaskedByMethod), mask_source="method"),
    ]
    seen = [env.reset(seed=3)[0] for env in envs]
    for _ in range(20):
        move = best_move(seen[0])
        for obs in seen[1:]:
            np.testing.assert_array_equal(obs["action_mask"].astype(bool), seen[0]["action_mask"].astype(bool))
            np.testing.assert_array_equal(obs["observation"], seen[0]["worth"])
        seen = [env.step(move)[0] for env in envs]
    # Turned off, a mask in the observation is an input like any other, and the others are not read.
    hidden = probe_env(Config(env=ILLEGAL_MOVES, action_masks=False))
    assert hidden.mask_source == "hidden" and not hidden.masked
    assert [leaf.key for leaf in hidden.obs_layout.leaves] == ["legal_actions", "worth"]
    assert probe_env(Config(env=toy_envs.MovesMaskedByMethod, action_masks=False)).mask_source is None


def reference_scores(logits: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor):
    """Log-probs and entropies of a categorical over the legal actions only, row by row."""
    logprobs, entropies = [], []
    for row, legal, action in zip(logits.tolist(), mask.tolist(), actions.tolist()):
        legal_logits = [x for x, ok in zip(row, legal) if ok]
        top = max(legal_logits)
        total = sum(np.exp(x - top) for x in legal_logits)
        log_p = [x - top - np.log(total) for x in legal_logits]
        logprobs.append(row[action] - top - np.log(total))
        entropies.append(-sum(np.exp(lp) * lp for lp in log_p))
    return torch.tensor(logprobs), torch.tensor(entropies)


def test_the_policy_scores_and_samples_only_legal_actions():
    spec = probe_env(Config(env=ILLEGAL_MOVES))
    config = Config(env=ILLEGAL_MOVES)
    torch.manual_seed(0)
    policy = build_policy(spec, config.policy, None, 10.0)
    for layer in policy.actor:  # logits far from uniform, so that a mask that leaks shows
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=2.0)
    env = make_env(EnvFactory(ILLEGAL_MOVES))
    rows = [env.reset(seed=seed)[0] for seed in range(64)]
    obs = {key: torch.from_numpy(value) for key, value in spec.obs_layout.stack(rows).items()}
    mask = obs["action_mask"]
    legal_actions = torch.stack([torch.multinomial(m.float(), 1)[0] for m in mask])
    _, logprob, entropy, _ = policy.get_action_and_value(obs, legal_actions[:, None].float())
    logits = policy.actor(policy.features(policy.prepare(obs))).detach()
    expected_logprob, expected_entropy = reference_scores(logits, mask, legal_actions)
    assert torch.allclose(logprob, expected_logprob.float(), atol=1e-5)
    assert torch.allclose(entropy, expected_entropy.float(), atol=1e-5)
    generator = torch.Generator().manual_seed(1)
    for _ in range(50):
        drawn = policy.get_action_and_value(obs, generator=generator)[0][:, 0].long()
        assert mask.gather(1, drawn[:, None]).all(), "a sampled action is always legal"
        noise = torch.rand(64, 1, generator=generator)
        drawn = policy.get_action_and_value(obs, noise=noise)[0][:, 0].long()
        assert mask.gather(1, drawn[:, None]).all(), "so is one drawn from given noise (central inference)"
    greedy = policy.act(obs)[:, 0].long()
    masked_logits = logits.masked_fill(~mask, -np.inf)
    assert torch.equal(greedy, masked_logits.argmax(1)), "the deterministic action is the best legal one"


@pytest.mark.parametrize(
    "options",
    [
        dict(inference="worker"),
        dict(inference="central"),
        dict(recurrent="lstm", recurrent_size=16, inference="worker"),
        dict(recurrent="gru", recurrent_size=16, inference="central"),
        dict(env=toy_envs.MovesMaskedByMethod),
    ],
    ids=["worker", "central", "lstm-worker", "gru-central", "method-source"],
)
def test_no_illegal_action_is_taken_and_the_first_ratio_is_one(options, first_log_ratios, no_leaks):
    config = moves_config(**options)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        pool.collect()
        pool.publish(learner.policy)
        batch = pool.collect()
    mask = batch.obs["action_mask"][:-1]
    taken = mask.gather(-1, batch.actions.long()).squeeze(-1)
    assert taken.all(), "every action taken was legal"
    assert not batch.terminated.any() and batch.truncated.any(), "so no episode ended early, and some reached 50"
    learner.update(batch)
    (log_ratios,) = first_log_ratios
    assert float(log_ratios.abs().max()) <= 1e-5


@pytest.mark.parametrize("wrong, says", [("empty", "allowed no action"), ("short", "of shape \\(9,\\)")])
def test_a_mask_that_allows_nothing_or_has_the_wrong_shape_stops_the_run_in_one_sentence_saved(
    wrong, says, tmp_path, no_leaks
):
    from prl import train

    config = moves_config(
        env=functools.partial(toy_envs.MaskGoesWrong, at=70, wrong=wrong), out=str(tmp_path / "run"), save_every=1
    )
    with pytest.raises(Exception, match=rf"MaskGoesWrong \(env 0 of worker \d, at step 20\).*{says}") as caught:
        train(config)
    assert "saved at 384 env steps" in str(caught.value)
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_mask_that_does_not_fit_the_actions_is_refused_before_any_worker_starts():
    import gymnasium as gym

    class Misfit(gym.Env):
        observation_space = gym.spaces.Dict({"action_mask": gym.spaces.MultiBinary(3)})
        action_space = gym.spaces.Discrete(4)

        def reset(self, *, seed=None, options=None):
            return {"action_mask": np.ones(3, np.int8)}, {}

    with pytest.raises(ConfigError, match=r"action mask has 3 entries, but its Discrete \(\) action space has 4"):
        probe_env(Config(env=Misfit))

    class Continuous(Misfit):
        action_space = gym.spaces.Box(-1, 1, (3,))

    with pytest.raises(ConfigError, match="a mask needs Discrete or MultiDiscrete actions"):
        probe_env(Config(env=Continuous))
    assert masks.mask_width(gym.spaces.MultiDiscrete([3, 2])) == 5


def test_evaluation_acts_within_the_mask(no_leaks):
    from prl.run.evaluation import evaluate

    config = moves_config()
    learner = Learner(config)
    result = evaluate(learner.policy, EnvFactory(ILLEGAL_MOVES), episodes=4, seed=1)
    assert result["lengths"] == [50, 50, 50, 50], "an untrained policy never plays an illegal move"


def test_multidiscrete_masks_cover_each_sub_action_and_one_allowing_nothing_names_it():
    import gymnasium as gym

    class TwoChoices(gym.Env):
        observation_space = gym.spaces.Dict(
            {"x": gym.spaces.Box(-1, 1, (2,)), "action_mask": gym.spaces.MultiBinary(5)}
        )
        action_space = gym.spaces.MultiDiscrete([3, 2])

        def reset(self, *, seed=None, options=None):
            return {"x": np.zeros(2, np.float32), "action_mask": np.array([0, 1, 1, 1, 0], np.int8)}, {}

    spec = probe_env(Config(env=TwoChoices))
    policy = build_policy(spec, Config(env=TwoChoices).policy, None, 10.0)
    mask = torch.tensor([[False, True, True, True, False]] * 256)
    obs = {"x": torch.randn(256, 2), "action_mask": mask}
    actions = policy.get_action_and_value(obs, generator=torch.Generator().manual_seed(0))[0].long()
    assert set(actions[:, 0].tolist()) == {1, 2} and set(actions[:, 1].tolist()) == {0}
    _, logprob, entropy, _ = policy.get_action_and_value(obs, actions.float())
    logits = policy.actor(policy.features(policy.prepare(obs))).detach()
    first, first_entropy = reference_scores(logits[:, :3], mask[:, :3], actions[:, 0])
    second, second_entropy = reference_scores(logits[:, 3:], mask[:, 3:], actions[:, 1])
    assert torch.allclose(logprob, (first + second).float(), atol=1e-5)
    assert torch.allclose(entropy, (first_entropy + second_entropy).float(), atol=1e-5)
    assert float(second.abs().max()) == 0.0, "a sub-action with one legal value is certain"
    stored = np.array([[True, False, False, False, True], [True, True, False, False, False]])
    with pytest.raises(ConfigError, match=r"^env 1 of the test allowed no action for sub-action 1; an action mask"):
        masks.check(stored, (3, 2), lambda i: f"env {i} of the test")


def test_with_masks_the_game_is_played_near_its_best_and_without_them_clearly_worse(tmp_path, no_leaks):
    # Seeds 1 to 5 at 50k steps with the preset: 34.8, 34.2, 34.5, 33.9, 33.4 with masks (best play:
    # 36.3 over these evaluation episodes), 28.2, 28.8, 29.7, 29.5, 29.1 without.
    from prl import train, tuned_config

    runs = {}
    for masked in (True, False):
        config = tuned_config(
            ILLEGAL_MOVES,
            steps=50_000,
            action_masks=masked,
            progress=False,
            tensorboard=False,
            out=str(tmp_path / str(masked)),
        )
        runs[masked] = train(config)
    assert runs[True]["eval_return_mean"] >= 33.0
    assert runs[False]["eval_return_mean"] <= 30.5
