"""Tuned defaults per environment, applied when a run names one of these env ids.

Values follow rl-baselines3-zoo's tuned PPO settings, adapted to prl's worker layout
(the batch is workers x envs_per_worker x rollout_steps). Explicit options override them.
"""

from __future__ import annotations

from typing import Any

from prl.config import Config, EnvSource, from_flat

PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        rollout_steps=32,
        steps=100_000,
        lr=1e-3,
        gamma=0.98,
        gae_lambda=0.8,
        epochs=20,
        minibatch_size=256,
        ent_coef=0.0,
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
    ),
}


def tuned_config(env: EnvSource = "CartPole-v1", **options: Any) -> Config:
    """A Config for `env` with its tuned defaults (if prl has them), then `options` on top.

    Options are named by field, e.g. `tuned_config("Pendulum-v1", workers=4, lr=3e-4)`.
    """
    preset = PRESETS.get(env, {}) if isinstance(env, str) else {}
    return from_flat({**preset, **options, "env": env})
