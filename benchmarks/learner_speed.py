"""Learner speed: PPO gradient steps per second, prl against Stable-Baselines3 at the same settings.

    python benchmarks/learner_speed.py [--env HalfCheetah-v5] [--updates 5] [--out DIR]
    python benchmarks/learner_speed.py --env ALE/Breakout-v5   # an image env: the CNN's part of each update

Both learners train on the same kind of batch: 512 env steps of the env collected with the
current policy, 20 epochs of 64-sample minibatches (160 gradient steps per update), two
256x256 ReLU networks, normalized observations and rewards: rl-zoo3's HalfCheetah settings,
where the learner is the bottleneck. Each side runs one torch thread, one after the other in
this process, and the figure is the mean over `--updates` updates after one warm-up update.
Needs the mujoco extra for MuJoCo envs and the bench extra for Stable-Baselines3.

For an env with image observations (the atari or minigrid extra), it measures instead how one
update of the env's preset splits: the time of a whole update, and the time of the CNN's
forward and backward passes over as many minibatches of the same size, with the preset's
learner threads and with one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import _reference as ref
import torch

from prl import ActorPool, Learner, tuned_config
from prl.config import Config
from prl.envs.factory import probe_env
from prl.envs.observations import map_obs

ROLLOUT = 512
MINIBATCH = 64
EPOCHS = 20
STEPS_PER_UPDATE = EPOCHS * ROLLOUT // MINIBATCH
ZOO_SETTINGS = dict(
    gamma=0.98,
    gae_lambda=0.92,
    lr=2.0633e-05,
    ent_coef=0.000401762,
    clip_coef=0.1,
    max_grad_norm=0.8,
    vf_coef=0.58096,
    log_std_init=-2.0,
)
"""rl-zoo3's PPO settings for HalfCheetah, besides the batch shape and network above."""


def prl_learner(env_id: str, updates: int, minibatch: int = MINIBATCH) -> dict:
    """Seconds per update of prl's Learner on one real batch, and gradient steps per second."""
    config = tuned_config(
        env_id,
        workers=2,
        envs_per_worker=1,
        rollout_steps=ROLLOUT // 2,
        steps=10**7,
        epochs=EPOCHS,
        minibatch_size=minibatch,
        hidden_sizes=(256, 256),
        activation="relu",
        normalize_obs=True,
        normalize_reward=True,
        progress=False,
        device="cpu",
        **ZOO_SETTINGS,
    )
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect(learner.device)
    learner.update(batch)
    started = time.perf_counter()
    for _ in range(updates):
        learner.update(batch)
    per_update = (time.perf_counter() - started) / updates
    steps = EPOCHS * round(ROLLOUT / minibatch)
    return {"system": "prl", "minibatch": minibatch, "update_s": per_update, "grad_steps_per_s": steps / per_update}


def sb3_learner(env_id: str, updates: int) -> dict:
    """Seconds per `PPO.train()` of Stable-Baselines3 at the same settings, and gradient steps per second."""
    reason = ref.missing("stable_baselines3")
    if reason:
        return {"system": "Stable-Baselines3", "skipped": reason}
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    env = VecNormalize(make_vec_env(env_id, n_envs=1, seed=1), gamma=ZOO_SETTINGS["gamma"])
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=ROLLOUT,
        batch_size=MINIBATCH,
        n_epochs=EPOCHS,
        gamma=ZOO_SETTINGS["gamma"],
        gae_lambda=ZOO_SETTINGS["gae_lambda"],
        learning_rate=ZOO_SETTINGS["lr"],
        ent_coef=ZOO_SETTINGS["ent_coef"],
        clip_range=ZOO_SETTINGS["clip_coef"],
        max_grad_norm=ZOO_SETTINGS["max_grad_norm"],
        vf_coef=ZOO_SETTINGS["vf_coef"],
        seed=1,
        device="cpu",
        policy_kwargs=dict(
            log_std_init=ZOO_SETTINGS["log_std_init"],
            ortho_init=False,
            activation_fn=torch.nn.ReLU,
            net_arch=dict(pi=[256, 256], vf=[256, 256]),
        ),
    )
    durations = []
    train = model.train

    def timed_train() -> None:
        started = time.perf_counter()
        train()
        durations.append(time.perf_counter() - started)

    model.train = timed_train
    model.learn(total_timesteps=ROLLOUT * (updates + 1))
    per_update = sum(durations[1:]) / len(durations[1:])
    return {
        "system": "Stable-Baselines3",
        "minibatch": MINIBATCH,
        "update_s": per_update,
        "grad_steps_per_s": STEPS_PER_UPDATE / per_update,
    }


def cnn_share(env_id: str, updates: int, threads: int) -> dict:
    """Seconds per update of the image env's preset, and the part its CNN (forward and backward) takes.

    One batch is collected with the preset's shape, then `learner.update` runs `updates` times on
    it. The CNN alone then runs forward and backward on as many minibatches of the same size as
    an update takes: the rest of the update is the heads, the PPO loss, the optimizer and the
    batch's preparation.
    """
    config = tuned_config(env_id, steps=10**7, progress=False, device="cpu", learner_threads=threads)
    learner = Learner(config)
    with ActorPool(config, learner.policy) as pool:
        batch = pool.collect(learner.device)
    with ref.torch_threads(threads):
        report = learner.update(batch)  # warm-up, and the number of gradient steps an update takes
        started = time.perf_counter()
        for _ in range(updates):
            learner.update(batch)
        per_update = (time.perf_counter() - started) / updates
        steps = report["gradient_steps"]
        policy = learner.policy
        frames = map_obs(lambda tensor: tensor[:-1].flatten(0, 1)[: config.ppo.minibatch_size], batch.obs)
        started = time.perf_counter()
        for _ in range(updates * steps):
            policy.zero_grad(set_to_none=True)
            policy.features(policy.prepare(frames)).sum().backward()
        cnn = (time.perf_counter() - started) / updates
    return {
        "env": env_id,
        "threads": threads,
        "minibatch": config.ppo.minibatch_size,
        "gradient_steps": steps,
        "update_s": per_update,
        "cnn_s": cnn,
        "cnn_share": cnn / per_update,
        "env_steps_per_update": config.batch_size,
    }


def print_cnn_share(rows: list[dict]) -> None:
    """The table of `cnn_share` rows."""
    first = rows[0]
    print(
        f"{first['env']}: one update = {first['gradient_steps']} gradient steps of {first['minibatch']} samples "
        f"({first['env_steps_per_update']:,} env steps)"
    )
    print("| torch threads | ms per update | CNN forward + backward, ms | CNN share | learner bound, env steps/s |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['threads']} | {row['update_s'] * 1000:.0f} | {row['cnn_s'] * 1000:.0f} | "
            f"{row['cnn_share']:.0%} | {row['env_steps_per_update'] / row['update_s']:,.0f} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env", default="HalfCheetah-v5", help="a Box-action env id, or an image env (default HalfCheetah-v5)"
    )
    parser.add_argument("--updates", type=int, default=5, help="timed updates per learner (default 5)")
    parser.add_argument("--out", help="folder for learner_speed.json")
    args = parser.parse_args(argv)
    if args.updates < 1:
        parser.error("--updates must be at least 1")
    if probe_env(Config(env=args.env)).obs_layout.has_images:
        threads = sorted({1, tuned_config(args.env).learner_threads})
        rows = [cnn_share(args.env, args.updates, count) for count in threads]
        print_cnn_share(rows)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "learner_speed.json").write_text(json.dumps({"env": args.env, "rows": rows}, indent=2))
        return 0
    with ref.torch_threads(1):
        rows = [prl_learner(args.env, args.updates), sb3_learner(args.env, args.updates)]
    sb3 = rows[1].get("grad_steps_per_s")
    print(f"{args.env}: {EPOCHS} epochs of {ROLLOUT}-step batches, 256x256 ReLU, one torch thread")
    print("| learner | minibatch | ms per update | gradient steps/s | vs SB3 |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        if "skipped" in row:
            print(f"| {row['system']} | - | - | - | skipped: {row['skipped']} |")
            continue
        ratio = f"{row['grad_steps_per_s'] / sb3:.2f}" if sb3 else "-"
        print(
            f"| {row['system']} | {row['minibatch']} | {row['update_s'] * 1000:.0f} | "
            f"{row['grad_steps_per_s']:,.0f} | {ratio} |"
        )
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "learner_speed.json").write_text(json.dumps({"env": args.env, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
