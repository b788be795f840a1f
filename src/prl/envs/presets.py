"""Tuned defaults per environment, applied when a run names one of these env ids.

A preset may name `batch_steps`, the env steps per update that its other values were tuned
for: unless `rollout_steps` is given explicitly, it is then derived from the number of envs,
so that `--workers 8 --envs-per-worker 4` learns as `--workers 2 --envs-per-worker 16` does.
Explicit options override every preset value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from prl.config import Config, EnvSource, from_flat

if TYPE_CHECKING:
    from prl.envs.spec import EnvSpec

UNIT_SCALE = (0.5, 10.0)
"""Half-ranges of observation bounds that count as already on a unit-like scale.

Observation normalization is on by default except when every dimension's bounds are finite
and half as wide as this range allows: such observations (Pendulum's cosines, sines and
velocity; LunarLander's positions and flags) already feed a network well, and normalizing
them only adds a warm-up. Unbounded dimensions (MuJoCo's joint velocities, CartPole's
velocities) and tiny ones (MountainCar's velocity, bounded by 0.07) are normalized.
"""


def normalizes_observations(normalize_obs: Optional[bool], spec: EnvSpec) -> bool:
    """The normalize_obs option as set, or, unset, True unless every dimension is bounded on a unit-like scale."""
    if normalize_obs is not None:
        return normalize_obs
    if spec.obs_low is None or spec.obs_high is None:
        return True
    half_range = (spec.obs_high - spec.obs_low) / 2
    low, high = UNIT_SCALE
    return not bool(np.all(np.isfinite(half_range) & (half_range >= low) & (half_range <= high)))


def normalizes_rewards(normalize_reward: Optional[bool], spec: EnvSpec) -> bool:
    """The normalize_reward option as set, or, unset, True for continuous actions.

    Continuous-control rewards (MuJoCo's velocities and costs, Pendulum's -16 to 0) vary in
    scale from task to task, and scaled returns keep the value loss, and so the shared
    learning rate, in a usable range; discrete tasks' rewards are mostly +-1 per step already.
    """
    if normalize_reward is not None:
        return normalize_reward
    return spec.is_continuous


MPE: dict[str, Any] = dict(
    envs_per_worker=24, batch_steps=2400, lr=3e-3, gamma=0.95, ent_coef=0.0, epochs=10, minibatch_size=1200
)
"""The settings of PettingZoo's particle envs (mpe2), each agent a row; PRESETS says why."""

PRESETS: dict[str, dict[str, Any]] = {
    # Tuned for speed to a solved policy: ~1,200 gradient steps of 256 samples over 100k env steps
    # reach a deterministic return of 500 on every seed tried (1 to 12, synchronous, overlapped, and
    # 8 workers x 4 envs), in about 2 s of training on 2 cores.
    "CartPole-v1": dict(
        envs_per_worker=32,
        batch_steps=2048,
        steps=100_000,
        lr=3e-3,
        gamma=0.99,
        gae_lambda=0.95,
        epochs=3,
        minibatch_size=256,
        ent_coef=0.0,
        normalize_obs=False,
        normalize_reward=False,
    ),
    "Pendulum-v1": dict(
        envs_per_worker=8,
        rollout_steps=256,
        steps=200_000,
        lr=1e-3,
        gamma=0.9,
        gae_lambda=0.95,
        epochs=10,
        minibatch_size=64,
        ent_coef=0.0,
        anneal_lr=False,
        normalize_obs=False,
        normalize_reward=False,
    ),
    # The entries below start from prl's defaults (see `Config` and `prl.config`: 2 x 16 envs x 64
    # steps, 10 epochs of 64, lr 3e-4 annealed, normalization from the spaces) and say where
    # they differ. Figures: one seed, deterministic evaluation over 20 episodes, 2 cores; the
    # benchmark (benchmarks/learning.py, docs/learning.md) holds the 3-seed results.
    # Defaults alone: -83.5 at 300k (58 s). With lr 3e-4 the seeds spread from -73 to -87 at
    # 500k; lr 1e-3 (annealed) gives -71.9 +- 3.7 over seeds 1 to 3 (92 s each). rl-zoo3's
    # shape (lambda 0.94, larger batch) and gamma 0.995 did worse here.
    "Acrobot-v1": dict(batch_steps=2048, steps=500_000, lr=1e-3),
    # Defaults alone reach the goal: -100 at 1M (168 s); normalizing the tiny velocity matters.
    "MountainCar-v0": dict(batch_steps=2048, steps=1_000_000),
    # The defaults reach the flag in 2 of 5 seeds at 100k: the flag's reward comes hundreds of
    # steps after the fuel is spent, and gamma 0.99 discounts it below the fuel cost, so the
    # policy learns to stand still. rl-zoo3's horizon (gamma 0.9999) with lambda 0.98: 93.4 +- 0.4
    # over seeds 1 to 5 (5 of 5 at the flag, 21 s each). Reward scaling stays on (the default).
    "MountainCarContinuous-v0": dict(batch_steps=2048, steps=100_000, gamma=0.9999, gae_lambda=0.98),
    # rl-zoo3's shape (16 envs x 1024 steps, gamma 0.999, lambda 0.98, entropy 0.01) with 10
    # epochs instead of 4, and half the rollout: 281 at 1M (179 s); the defaults reach 54.
    "LunarLander-v3": dict(
        batch_steps=16_384,
        steps=1_000_000,
        epochs=10,
        minibatch_size=64,
        gamma=0.999,
        gae_lambda=0.98,
        ent_coef=0.01,
    ),
    # rl-zoo3's discount, lambda and network (gamma 0.98, lambda 0.92, two 256x256 ReLU MLPs),
    # and a smaller initial action noise (log std -1, as rl-zoo3's -2 leans the same way): with
    # std 1, seed 3 of 3 stalled near 1,700 (mean 4006); with std 0.37 seeds 1 to 3 reach 5237,
    # 6448 and 6369 at 1M (mean 6018, about 330 s each). The defaults alone reach 3630 (194 s).
    "HalfCheetah-v5": dict(
        batch_steps=2048,
        steps=1_000_000,
        gamma=0.98,
        gae_lambda=0.92,
        hidden_sizes=(256, 256),
        activation="relu",
        log_std_init=-1.0,
    ),
    # Defaults alone: 3591 at 1M (241 s).
    "Hopper-v5": dict(batch_steps=2048, steps=1_000_000),
    # Defaults alone: 5254 at 1M (242 s).
    "Walker2d-v5": dict(batch_steps=2048, steps=1_000_000),
    # Without the 84 contact forces in the observation (as in Ant-v4, where the published PPO
    # results come from), collecting while learning: 2327 at 1M (249 s). With the contact
    # forces the defaults reach 404, the policy thrashing (clip fraction 0.4); a third of the
    # learning rate only brings that to 855.
    "Ant-v5": dict(
        batch_steps=2048,
        steps=1_000_000,
        mode="overlap",
        env_kwargs={"include_cfrc_ext_in_observation": False},
    ),
    # Atari (the atari extra), from CleanRL's ppo_atari: 8 envs x 128 steps, 4 epochs of 4
    # minibatches, lr 2.5e-4 annealed, clip 0.1 with a clipped value loss, entropy 0.01, linear
    # actor and critic heads on the Nature CNN's 512 features, 10M steps. Rewards are already
    # clipped to their sign, so they are not scaled again. The learner's update is 84% of each
    # iteration, and in synchronous mode the workers wait meanwhile, so the learner takes two
    # threads: 413 env steps/s on Breakout on 2 cores, against 253 with one (SB3: 210 / 320).
    **{
        env: dict(
            learner_threads=2,
            workers=2,
            envs_per_worker=4,
            batch_steps=1024,
            steps=10_000_000,
            epochs=4,
            minibatch_size=256,
            lr=2.5e-4,
            clip_coef=0.1,
            clip_vloss=True,
            ent_coef=0.01,
            hidden_sizes=(),
            normalize_reward=False,
        )
        for env in ("ALE/Pong-v5", "ALE/Breakout-v5")
    },
    # CartPole seen through its positions only: prl's own (prl.envs.tasks) and POPGym's (the
    # popgym extra, whose returns lie in [0, 1]). An LSTM of 64 between the observation and heads
    # of one 64-unit layer, rl-zoo3's horizon for RecurrentPPO on the same task (gamma 0.999,
    # lambda 0.98), 2 x 32 envs x 32 steps, 4 epochs of 256-sample minibatches (8 env sequences
    # each), rewards scaled. CartPoleNoVel, seeds 1 to 5 at 200k: 500, 500, 500, 499.6, 500 (14
    # to 19 s of training each); 8 epochs learn as well in twice the time (481.5 to 500), gamma
    # 0.99 and lambda 0.95 reach 500 in 3 of 5 seeds, and the same run with --recurrent none stays
    # near 45. POPGym's PositionOnlyCartPoleEasy: 1.000 at 200k (seed 1, 16 s).
    **{
        env: dict(
            recurrent="lstm",
            recurrent_size=64,
            hidden_sizes=(64,),
            envs_per_worker=32,
            batch_steps=2048,
            steps=200_000,
            lr=1e-3,
            gamma=0.999,
            gae_lambda=0.98,
            epochs=4,
            minibatch_size=256,
            ent_coef=0.0,
            normalize_reward=True,
        )
        for env in ("prl/CartPoleNoVel-v1", "popgym-PositionOnlyCartPoleEasy-v0")
    },
    # POPGym (the popgym extra; returns lie in [-1, 1], so rewards are scaled).
    # Repeat the card seen 4 steps before: its reward comes at once, so a short horizon (gamma
    # 0.9) and a GRU of 128: 1.000 at 300k (seed 1, 48 s); the CartPole settings reach 0.381.
    "popgym-RepeatPreviousEasy-v0": dict(
        recurrent="gru",
        recurrent_size=128,
        hidden_sizes=(64,),
        envs_per_worker=32,
        batch_steps=2048,
        steps=300_000,
        lr=1e-3,
        gamma=0.9,
        epochs=4,
        minibatch_size=256,
        normalize_reward=True,
    ),
    # Count how often the queried colour was dealt: each step's answer changes nothing after it,
    # so no horizon at all (gamma 0: the advantage is the reward less the value). The agent sees
    # its own last answer (previous_action, the view POPGym's baselines train on), an LSTM of 256
    # (POPGym's memory size) holds the count over whole 52-card episodes (64-step rollouts), and
    # an entropy bonus of 0.01 keeps it from settling early on one of 27 answers. Seeds 1 to 3 at
    # 3M: 0.725, 0.710, 0.600 (about 11 min each; POPGym's LSTM: 0.509). Without the last answer:
    # 0.33 at 2M; with an LSTM of 128 and no last answer 0.38 at 5M, where it levels off.
    "popgym-CountRecallEasy-v0": dict(
        env_kwargs={"previous_action": True},
        recurrent="lstm",
        recurrent_size=256,
        hidden_sizes=(64,),
        envs_per_worker=32,
        batch_steps=4096,
        steps=3_000_000,
        lr=1e-3,
        gamma=0.0,
        epochs=4,
        minibatch_size=512,
        ent_coef=0.01,
        normalize_reward=True,
    ),
    # prl's game of illegal moves (prl.envs.tasks), for action masks: 2 x 32 envs x 32 steps, 4
    # epochs of 512, lr 3e-3 (seed 1: 36.0 at 42k steps/s; 2 x 8 envs, 4 epochs of 128 and lr 1e-3
    # also reached 36.0, at a quarter of the speed, the learner's many small steps taking half the
    # time); sb3-contrib's MaskablePPO runs with the same settings beside it (benchmarks/sb3_references.py).
    "prl/IllegalMoves-v0": dict(
        envs_per_worker=32, batch_steps=2048, steps=100_000, lr=3e-3, epochs=4, minibatch_size=512
    ),
    # PettingZoo's particle envs (the mpe2 extra), one policy shared by the agents, each agent a
    # row (prl.envs.agents): 2 x 24 rows x 50 steps (two 25-step episodes per rollout), 10 epochs
    # of 1,200 agent-steps. A learning rate of 3e-3, gamma 0.95 (the episodes last 25 steps) and
    # no entropy bonus learned fastest at 1M agent-steps (seed 1, team return -49.5 at 2e-3 with
    # gamma 0.95, -53.6 at 7e-4, about -57 at 7e-4 with MAPPO's gamma 0.99 and 0.01 entropy, against
    # -80 for random play); 3M: -41.5. benchmarks/sb3_references.py trains SB3's PPO with the same.
    "pettingzoo:mpe2.simple_spread_v3": {**MPE, "steps": 3_000_000},
    # A speaker and a listener in turn (2 agents, 50 actions: a move and a word): the same
    # settings, 12 envs per worker. 1M (seed 1): -34.6 against -59 for random play; --agent-ids
    # (-35.0) did not help, the observation already says which landmark each agent's partner wants.
    "pettingzoo:mpe2.simple_reference_v3": {**MPE, "steps": 2_000_000},
    # MiniGrid (the minigrid extra) trains from the 7x7 view through the small grid CNN
    # (`prl.nn.encoders`). Half the default batch (2 x 8 envs x 64 steps): the view is cheap to
    # learn from, and more updates reach the goal sooner. Empty: 0.955 at 30k (seed 1).
    "MiniGrid-Empty-5x5-v0": dict(envs_per_worker=8, batch_steps=1024, steps=50_000),
    # The key must be found before the door opens: an entropy bonus of 0.01 keeps the policy
    # exploring until it is: 0.964 at 150k (seed 1); without it the policy settles on wandering.
    "MiniGrid-DoorKey-5x5-v0": dict(envs_per_worker=8, batch_steps=1024, steps=150_000, ent_coef=0.01),
}


def tuned_config(env: EnvSource = "CartPole-v1", **options: Any) -> Config:
    """A Config for `env` with its tuned defaults (if prl has them), then `options` on top.

    Options are named by field, e.g. `tuned_config("Pendulum-v1", workers=4, lr=3e-4)`.
    """
    preset = dict(PRESETS.get(env, {})) if isinstance(env, str) else {}
    batch_steps = preset.pop("batch_steps", None)
    values = {**preset, **options, "env": env}
    if batch_steps is not None and "rollout_steps" not in options:
        envs = values.get("workers", Config.workers) * values.get("envs_per_worker", Config.envs_per_worker)
        if envs >= 1:  # otherwise Config says what is wrong with workers or envs_per_worker
            values["rollout_steps"] = max(1, round(batch_steps / envs))
    return from_flat(values)
