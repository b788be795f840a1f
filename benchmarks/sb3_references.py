"""sb3-contrib's RecurrentPPO and MaskablePPO, and SB3's PPO shared by PettingZoo agents: the references
`learning.py --sb3-contrib` runs beside prl.

    python benchmarks/sb3_references.py recurrent --env prl/CartPoleNoVel-v1 --steps 100000 --out DIR  # the bench extra
    python benchmarks/sb3_references.py maskable --env prl/IllegalMoves-v0 --steps 100000 --out DIR
    python benchmarks/sb3_references.py shared --env pettingzoo:mpe2.simple_spread_v3 --steps 2000000 --out DIR

- `recurrent`: `RecurrentPPO("MlpLstmPolicy")` with rl-zoo3's tuned `CartPoleNoVel-v1` settings (8
  envs of a DummyVecEnv, 32 steps each, 20 epochs of 256, gamma 0.98, lambda 0.8, learning rate
  and clip range annealed linearly from 1e-3 and 0.2, an LSTM of 64 for the actor and another
  for the critic, one ReLU layer of 64 each, observations normalized by VecNormalize).
- `maskable`: `MaskablePPO("MultiInputPolicy")`, which reads the env's `action_masks()`, with the
  settings of prl's `prl/IllegalMoves-v0` preset (`MASKABLE_SETTINGS`: the same envs, rollout,
  epochs, minibatches, rates and network widths), so that both systems do the same work per step.
- `shared`: SB3's `PPO("MlpPolicy")` on a PettingZoo ParallelEnv whose agents SuperSuit turns into
  the rows of one vector env (`pettingzoo_env_to_vec_env_v1`, `concat_vec_envs_v1`): parameter
  sharing as PettingZoo's own SB3 tutorial trains it, with the settings of prl's preset for the
  env (`SHARED_SETTINGS`). Its steps are agent-steps and its returns team returns (the sum over
  an env's agents), as prl reports them for PettingZoo envs.

Each run then evaluates the deterministic policy over 20 episodes. The env comes from prl's own
recipe (`prl.envs.factory`), so that both systems train on the same env.

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
from typing import Callable, Optional

import numpy as np

from prl.envs.factory import EnvFactory, make_env

EVAL_EPISODES = 20
RECURRENT_ENVS = 8
RECURRENT_SETTINGS = dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, ent_coef=0.0)
"""rl-zoo3's RecurrentPPO hyperparameters for CartPoleNoVel-v1, besides the annealed rates and the network."""
MASKABLE_ENVS = 64
MASKABLE_SETTINGS = dict(
    n_steps=32, batch_size=512, n_epochs=4, gamma=0.99, gae_lambda=0.95, learning_rate=3e-3, ent_coef=0.0
)
"""prl's preset for prl/IllegalMoves-v0 in SB3's terms: 64 envs x 32 steps, 4 epochs of 512 samples."""
SHARED_ROWS = 48
"""Agent rows of the SB3 vector env, as prl's presets for the mpe2 envs have (2 workers x 24)."""
SHARED_SETTINGS = dict(n_steps=50, batch_size=1200, n_epochs=10, gamma=0.95, gae_lambda=0.95, ent_coef=0.0)
"""prl's presets for the mpe2 envs in SB3's terms: 48 agent rows (16 envs of 3 agents) x 50 steps,
10 epochs of 1,200, and the learning rate annealed linearly from 3e-3 (`SHARED_LR`), as prl anneals it."""
SHARED_LR = 3e-3
ALGORITHMS = {
    "recurrent": "sb3-contrib RecurrentPPO",
    "maskable": "sb3-contrib MaskablePPO",
    "shared": "SB3 PPO + SuperSuit",
}
"""The references by name, and the label their curves and tables carry."""


def linear(start: float):
    """An SB3 schedule falling linearly from `start` to 0 over training (rl-zoo3's `lin_` values)."""
    return lambda progress_remaining: progress_remaining * start


def vec_env(env_id: str, count: int, seed: int, normalize: bool):
    """`count` Monitor-wrapped copies of prl's env for `env_id` in a DummyVecEnv, normalized if asked."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    factory = EnvFactory(env_id)
    venv = DummyVecEnv([lambda: Monitor(make_env(factory)) for _ in range(count)])
    if normalize:
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False)
    venv.seed(seed)
    return venv


def agents_vec_env(env_id: str, rows: int, seed: int):
    """Copies of a PettingZoo env whose agents make `rows` rows of one SB3 vector env (SuperSuit), and the agent count."""
    import supersuit
    from stable_baselines3.common.vec_env import VecMonitor

    parallel = EnvFactory(env_id)()
    agents = len(parallel.possible_agents)
    envs = max(1, rows // agents)
    agent_rows = supersuit.pettingzoo_env_to_vec_env_v1(parallel)
    concatenated = supersuit.concat_vec_envs_v1(agent_rows, envs, num_cpus=1, base_class="stable_baselines3")
    concatenated.venv.reset(seed=seed)  # SuperSuit's vector env takes its seed at reset, not from SB3's seed()
    return VecMonitor(concatenated), agents


def shared_model(venv, seed: int):
    """SB3 PPO with prl's simple_spread preset, tanh layers of 64 as prl's MLPs."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import set_random_seed
    from torch import nn

    # PPO(seed=...) would also seed the vector env, which SuperSuit's refuses (it was seeded at reset).
    set_random_seed(seed)
    return PPO(
        "MlpPolicy",
        venv,
        learning_rate=linear(SHARED_LR),
        policy_kwargs=dict(activation_fn=nn.Tanh, net_arch=dict(pi=[64, 64], vf=[64, 64])),
        verbose=0,
        **SHARED_SETTINGS,
    )


def recurrent_model(venv, seed: int):
    """RecurrentPPO with rl-zoo3's CartPoleNoVel-v1 settings."""
    from sb3_contrib import RecurrentPPO
    from torch import nn

    return RecurrentPPO(
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
        **RECURRENT_SETTINGS,
    )


def maskable_model(venv, seed: int):
    """MaskablePPO with prl's IllegalMoves preset, tanh layers of 64 as prl's MLPs."""
    from sb3_contrib import MaskablePPO
    from torch import nn

    return MaskablePPO(
        "MultiInputPolicy",
        venv,
        policy_kwargs=dict(activation_fn=nn.Tanh, net_arch=dict(pi=[64, 64], vf=[64, 64])),
        seed=seed,
        verbose=0,
        **MASKABLE_SETTINGS,
    )


def train(algorithm: str, env_id: str, steps: int, seed: int, out: Path) -> dict:
    """Train and evaluate one run of `algorithm`; writes out/episodes.jsonl and returns the summary."""
    from stable_baselines3.common.callbacks import BaseCallback

    recurrent = algorithm == "recurrent"
    agents = 1
    if algorithm == "shared":
        venv, agents = agents_vec_env(env_id, SHARED_ROWS, seed)
    else:
        venv = vec_env(env_id, RECURRENT_ENVS if recurrent else MASKABLE_ENVS, seed, normalize=recurrent)
    episodes = (out / "episodes.jsonl").open("w")
    started = time.perf_counter()

    class Episodes(BaseCallback):
        """Writes each finished episode's return and length, with the env steps and seconds so far.

        With agents, an episode is an env's: its agents' rows end together, and their returns add up."""

        def _on_step(self) -> bool:
            infos = self.locals["infos"]
            for first in range(0, len(infos), agents):
                ended = [info["episode"] for info in infos[first : first + agents] if "episode" in info]
                if len(ended) == agents:
                    line = {
                        "env_steps": self.num_timesteps,
                        "wall_s": time.perf_counter() - started,
                        "return": float(sum(episode["r"] for episode in ended)),
                        "length": int(ended[0]["l"]),
                    }
                    episodes.write(json.dumps(line) + "\n")
            return True

    model = {"recurrent": recurrent_model, "maskable": maskable_model, "shared": shared_model}[algorithm](venv, seed)
    model.learn(total_timesteps=steps, callback=Episodes())
    train_s = time.perf_counter() - started
    episodes.close()
    if algorithm == "shared":
        returns = evaluate_agents(model, env_id, seed)
    else:
        returns = evaluate(model, venv, env_id, seed, recurrent)
    settings = {
        "recurrent": {
            **RECURRENT_SETTINGS,
            "envs": RECURRENT_ENVS,
            "learning_rate": "linear from 1e-3",
            "clip_range": "linear from 0.2",
        },
        "maskable": {**MASKABLE_SETTINGS, "envs": MASKABLE_ENVS},
        "shared": {
            **SHARED_SETTINGS,
            "rows": SHARED_ROWS,
            "agents": agents,
            "learning_rate": f"linear from {SHARED_LR}",
        },
    }[algorithm]
    return {
        "system": ALGORITHMS[algorithm],
        "env": env_id,
        "seed": seed,
        "steps": int(model.num_timesteps),
        "train_s": train_s,
        "steps_per_s": model.num_timesteps / train_s,
        "eval_return_mean": float(np.mean(returns)),
        "eval_return_std": float(np.std(returns)),
        "eval_episodes": len(returns),
        "settings": settings,
    }


def evaluate(model, venv, env_id: str, seed: int, recurrent: bool) -> list[float]:
    """Deterministic returns of EVAL_EPISODES episodes on one env: an LSTM's state carried and reset
    per episode, or the action chosen within the env's mask."""
    from stable_baselines3.common.vec_env import VecNormalize

    env = vec_env(env_id, 1, seed + 1000, normalize=False)
    if recurrent:
        env = VecNormalize(env, norm_obs=True, norm_reward=False, training=False)
        env.obs_rms = venv.obs_rms
    act: Callable = (
        (lambda obs, state, start: model.predict(obs, state=state, episode_start=start, deterministic=True))
        if recurrent
        else (
            lambda obs, state, start: model.predict(
                obs, deterministic=True, action_masks=np.stack(env.env_method("action_masks"))
            )
        )
    )
    returns = []
    obs = env.reset()
    state: Optional[tuple] = None
    start = np.ones((1,), dtype=bool)
    total = 0.0
    while len(returns) < EVAL_EPISODES:
        action, state = act(obs, state, start)
        obs, reward, done, _ = env.step(action)
        total += float(reward[0])
        start = done
        if done[0]:
            returns.append(total)
            total = 0.0
    return returns


def evaluate_agents(model, env_id: str, seed: int) -> list[float]:
    """Deterministic team returns (the sum over the agents) of EVAL_EPISODES episodes of one env."""
    venv, agents = agents_vec_env(env_id, 1, seed + 1000)  # one env
    returns: list[float] = []
    obs = venv.reset()
    total = 0.0
    while len(returns) < EVAL_EPISODES:
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, done, _ = venv.step(action)
        total += float(reward.sum())
        if done.all():
            returns.append(total)
            total = 0.0
    return returns


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "algorithm",
        choices=sorted(ALGORITHMS),
        help="recurrent (RecurrentPPO), maskable (MaskablePPO) or shared (PPO shared by PettingZoo agents)",
    )
    parser.add_argument("--env", required=True, help="env id, e.g. prl/CartPoleNoVel-v1 or prl/IllegalMoves-v0")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps to train for (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="folder for episodes.jsonl and summary.json")
    args = parser.parse_args(argv)
    try:
        import sb3_contrib  # noqa: F401
        import supersuit  # noqa: F401
    except ImportError as error:
        print(f'sb3_references.py: error: {error.name} is missing; pip install -e ".[bench]".', file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    summary = train(args.algorithm, args.env, args.steps, args.seed, args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
