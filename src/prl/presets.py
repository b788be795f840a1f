"""Tuned defaults per environment, applied when a run names one of these env ids.

A preset may name `batch_steps`, the env steps per update that its other values were tuned
for: unless `rollout_steps` is given explicitly, it is then derived from the number of envs,
so that `--workers 8 --envs-per-worker 4` learns as `--workers 2 --envs-per-worker 16` does.
Explicit options override every preset value.
"""

from __future__ import annotations

from typing import Any

from prl.config import Config, EnvSource, from_flat

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
    preset = dict(PRESETS.get(env, {})) if isinstance(env, str) else {}
    batch_steps = preset.pop("batch_steps", None)
    values = {**preset, **options, "env": env}
    if batch_steps is not None and "rollout_steps" not in options:
        envs = values.get("workers", Config.workers) * values.get("envs_per_worker", Config.envs_per_worker)
        if envs >= 1:  # otherwise Config says what is wrong with workers or envs_per_worker
            values["rollout_steps"] = max(1, round(batch_steps / envs))
    return from_flat(values)
