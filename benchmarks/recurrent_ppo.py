"""sb3-contrib's RecurrentPPO on a memory task, the reference `learning.py --recurrent-ppo` runs beside prl.

    python benchmarks/recurrent_ppo.py --env prl/CartPoleNoVel-v1 --steps 100000 --out DIR  # the bench extra

Trains `RecurrentPPO("MlpLstmPolicy")` with rl-zoo3's tuned `CartPoleNoVel-v1` settings (8 envs
of a DummyVecEnv, 32 steps each, 20 epochs of 256, gamma 0.98, lambda 0.8, learning rate and clip
range annealed linearly from 1e-3 and 0.2, an LSTM of 64 for the actor and another for the
critic, one ReLU layer of 64 each, observations normalized by VecNormalize), then evaluates the
deterministic policy over 20 episodes. The env comes from prl's own recipe (`prl.envs.factory`),
so that both systems train on the same env.

DIR receives `episodes.jsonl` (one line per finished training episode: env_steps, wall_s,
return, length, the format `learning.py --reference` reads) and `summary.json` (steps, training
seconds, env steps/s, the evaluation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from prl.envs.factory import EnvFactory, make_env

ENVS = 8
EVAL_EPISODES = 20
SETTINGS = dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, ent_coef=0.0)
"""rl-zoo3's RecurrentPPO hyperparameters for CartPoleNoVel-v1, besides the annealed rates and the network."""


def linear(start: float):
    """An SB3 schedule falling linearly from `start` to 0 over training (rl-zoo3's `lin_` values)."""
    return lambda progress_remaining: progress_remaining * start


def train(env_id: str, steps: int, seed: int, out: Path) -> dict:
    """Train and evaluate one RecurrentPPO run; writes out/episodes.jsonl and returns the summary."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    from torch import nn

    factory = EnvFactory(env_id)
    venv = VecNormalize(
        DummyVecEnv([lambda: Monitor(make_env(factory)) for _ in range(ENVS)]), norm_obs=True, norm_reward=False
    )
    venv.seed(seed)
    episodes = (out / "episodes.jsonl").open("w")
    started = time.perf_counter()

    class Episodes(BaseCallback):
        """Writes each finished episode's return and length, with the env steps and seconds so far."""

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    line = {
                        "env_steps": self.num_timesteps,
                        "wall_s": time.perf_counter() - started,
                        "return": float(info["episode"]["r"]),
                        "length": int(info["episode"]["l"]),
                    }
                    episodes.write(json.dumps(line) + "\n")
            return True

    model = RecurrentPPO(
        "MlpLstmPolicy",
        venv,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
        policy_kwargs=dict(
            ortho_init=False,
            activation_fn=nn.ReLU,
            lstm_hidden_size=64,
            enable_critic_lstm=True,
            net_arch=dict(pi=[64], vf=[64]),
        ),
        seed=seed,
        verbose=0,
        **SETTINGS,
    )
    model.learn(total_timesteps=steps, callback=Episodes())
    train_s = time.perf_counter() - started
    episodes.close()
    returns = evaluate(model, venv, env_id, seed)
    return {
        "system": "sb3-contrib RecurrentPPO",
        "env": env_id,
        "seed": seed,
        "steps": int(model.num_timesteps),
        "train_s": train_s,
        "steps_per_s": model.num_timesteps / train_s,
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "eval_episodes": len(returns),
        "settings": {**SETTINGS, "envs": ENVS, "learning_rate": "linear from 1e-3", "clip_range": "linear from 0.2"},
    }


def evaluate(model, venv, env_id: str, seed: int) -> list[float]:
    """Deterministic returns of EVAL_EPISODES episodes, one env, the LSTM state carried and reset per episode."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    factory = EnvFactory(env_id)
    env = VecNormalize(DummyVecEnv([lambda: make_env(factory)]), norm_obs=True, norm_reward=False, training=False)
    env.obs_rms = venv.obs_rms
    env.seed(seed + 1000)
    returns = []
    obs = env.reset()
    state: Optional[tuple] = None
    start = np.ones((1,), dtype=bool)
    total = 0.0
    while len(returns) < EVAL_EPISODES:
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        obs, reward, done, _ = env.step(action)
        total += float(reward[0])
        start = done
        if done[0]:
            returns.append(total)
            total = 0.0
    return returns


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="prl/CartPoleNoVel-v1", help="env id (default prl/CartPoleNoVel-v1)")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps to train for (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for episodes.jsonl and summary.json")
    args = parser.parse_args(argv)
    try:
        import sb3_contrib  # noqa: F401
    except ImportError:
        print('recurrent_ppo.py: error: sb3-contrib is missing; pip install -e ".[bench]".', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    summary = train(args.env, args.steps, args.seed, args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
