"""What prl is measured against: raw env stepping, one-process collection, AsyncVectorEnv and SB3.

Every function here runs one measurement for a fixed time or a fixed step budget and returns a
record made by `rate()`; `throughput.py` decides what to run and prints the table. Nothing here
uses prl's processes: prl only lends its env recipe (so that an Atari id gets the same
preprocessing everywhere) and its policy network, so that every collection loop pays for the
same forward pass.
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from functools import partial
from typing import Callable, Iterator, Optional

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from prl.config import PolicyConfig
from prl.envs.factory import EnvFactory, make_env
from prl.envs.spec import EnvSpec
from prl.nn.actors import TorchActor, make_actor
from prl.nn.policy import build_policy

ACTION_POOL = 1024
"""Random actions drawn before the clock starts, so that sampling does not count as stepping."""

WARMUP_STEPS = 20
"""Vector steps taken before timing, so that first-call costs (allocations, caches) are excluded."""

SB3_ENVS = 8
"""Envs of the Stable-Baselines3 runs, as in rl-baselines3-zoo's CartPole-v1 settings."""

SB3_SETTINGS = dict(
    n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, learning_rate=1e-3, ent_coef=0.0
)
"""rl-baselines3-zoo's tuned PPO for CartPole-v1 (constant rates instead of its linear schedules)."""

SB3_ATARI_SETTINGS = dict(
    n_steps=128, batch_size=256, n_epochs=4, learning_rate=2.5e-4, clip_range=0.1, vf_coef=0.5, ent_coef=0.01
)
"""rl-baselines3-zoo's PPO for Atari with 8 envs, AtariWrapper and 4 stacked frames (constant rates
instead of its linear schedules): the same work per env step as prl's Atari presets."""

SB3_FRAME_STACK = 4

ASYNC_ENVS = 8
"""Envs of the AsyncVectorEnv measurement: one process each."""


def rate(steps: int, seconds: float, **extra) -> dict:
    """A measurement record: env steps, seconds, steps per second, and any extra fields."""
    return {"steps": int(steps), "seconds": seconds, "steps_per_s": steps / seconds, **extra}


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch threads, then restore the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _same_step_autoreset() -> dict:
    # prl's workers reset a finished env inside the step that ended it; gymnasium's default
    # (NEXT_STEP) would spend one counted step per episode on a dummy transition instead.
    mode = getattr(gym.vector, "AutoresetMode", None)
    return {} if mode is None else {"autoreset_mode": mode.SAME_STEP}


def env_recipe(env_id: str) -> Callable[[], gym.Env]:
    """A picklable function that makes `env_id` as prl's workers do (an Atari id gets its preprocessing)."""
    return partial(make_env, EnvFactory(env_id))


def step_randomly(env_id: str, seconds: float, barrier, results) -> None:
    """Process entry point: step one env with random actions for `seconds`; put (steps, elapsed)."""
    env = env_recipe(env_id)()
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(ACTION_POOL)]
    env.reset(seed=0)
    barrier.wait()  # all processes step at the same time, so the machine is really shared
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions:  # the clock is read once per pass over the pool, not once per step
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        steps += len(actions)
    results.put((steps, time.perf_counter() - start))
    env.close()


def raw_floor(env_id: str, processes: int, seconds: float, context) -> dict:
    """Steps/s of `processes` processes, each stepping one env with random actions, summed."""
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(target=step_randomly, args=(env_id, seconds, barrier, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        parts = [results.get(timeout=seconds + 120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()
    record = rate(sum(steps for steps, _ in parts), max(elapsed for _, elapsed in parts), processes=processes)
    record["steps_per_s"] = sum(steps / elapsed for steps, elapsed in parts)  # each process ran its own clock
    return record


def drive(
    vector_env: gym.vector.VectorEnv, act: Callable[[np.ndarray], np.ndarray], spec: EnvSpec, seconds: float
) -> dict:
    """Step `vector_env` for `seconds`, `act` choosing every action in this process.

    Flat observations reach `act` as float32, as in prl's workers; other layouts as prl's workers
    stack them (`ObsLayout.stack`: one array per leaf, uint8 images stay uint8).
    """
    single_space = vector_env.single_observation_space

    def step(obs):
        if spec.flat_obs:
            obs = np.asarray(obs, dtype=np.float32)
        else:
            obs = spec.obs_layout.stack(list(gym.vector.utils.iterate(single_space, obs)))
        actions = act(obs)
        return vector_env.step(np.asarray(spec.to_env_actions(actions)))[0]

    obs, _ = vector_env.reset(seed=0)
    for _ in range(WARMUP_STEPS):
        obs = step(obs)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        obs = step(obs)
        steps += 1
    return rate(steps * vector_env.num_envs, time.perf_counter() - start, envs=vector_env.num_envs)


def torch_actor(spec: EnvSpec, policy: PolicyConfig) -> Callable:
    """The network under `torch.inference_mode` (`prl.nn.actors.TorchActor`): action, log-prob and value in one call."""
    actor = TorchActor(build_policy(spec, policy, False, 10.0), np.random.default_rng(0))
    return lambda obs: actor.act(obs)[0]


def worker_actor(spec: EnvSpec, policy: PolicyConfig) -> Optional[Callable]:
    """The numpy copy of the network that prl's workers act with on flat observations; None where they use torch."""
    network = build_policy(spec, policy, False, 10.0)
    if network.encoder is not None:
        return None
    actor = make_actor(network, np.random.default_rng(0))
    return lambda obs: actor.act(obs)[0]  # act() also computes log-probs and values, as in a worker


def collection_floor(
    env_id: str,
    spec: EnvSpec,
    num_envs: int,
    seconds: float,
    actor: str = "torch",
    policy: Optional[PolicyConfig] = None,
) -> dict:
    """Steps/s of one process stepping a SyncVectorEnv of `num_envs` envs, one thread, `actor` in the loop.

    `actor` is "torch" (the network under `torch.inference_mode`) or "worker" (the numpy actor
    prl's workers use on flat observations; skipped where they act with the torch policy).
    `policy` is the network's settings (default: prl's default network).
    """
    policy = policy or PolicyConfig()
    act = torch_actor(spec, policy) if actor == "torch" else worker_actor(spec, policy)
    if act is None:
        return {"envs": num_envs, "actor": actor, "skipped": "prl's workers act with the torch policy here"}
    envs = gym.vector.SyncVectorEnv([env_recipe(env_id)] * num_envs, **_same_step_autoreset())
    try:
        # one thread for torch and BLAS, as in a prl worker: spinning idle threads only steal the core
        with torch_threads(1), threadpool_limits(limits=1):
            return {**drive(envs, act, spec, seconds), "actor": actor}
    finally:
        envs.close()


def async_collection(
    env_id: str, spec: EnvSpec, seconds: float, start_method: str, policy: Optional[PolicyConfig] = None
) -> dict:
    """Steps/s of gymnasium's AsyncVectorEnv (shared memory, one process per env), torch policy in this process."""
    envs = gym.vector.AsyncVectorEnv(
        [env_recipe(env_id)] * ASYNC_ENVS, shared_memory=True, context=start_method, **_same_step_autoreset()
    )
    try:
        with torch_threads(1), threadpool_limits(limits=1):
            return drive(envs, torch_actor(spec, policy or PolicyConfig()), spec, seconds)
    finally:
        envs.close()


def missing(package: str) -> Optional[str]:
    """None when `package` can be imported, else a one-line reason to print when skipping."""
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package.replace('_', '-')})"
    return None


def sb3_training(env_id: str, vec_env: str, total_steps: int, threads: int, seed: int = 1) -> dict:
    """Steps/s of Stable-Baselines3 PPO's `learn` over `total_steps`, with DummyVecEnv or SubprocVecEnv.

    An `ALE/` id runs as rl-baselines3-zoo runs Atari: `make_atari_env` (AtariWrapper) on the
    id made with frameskip 1, 4 stacked frames, CnnPolicy and `SB3_ATARI_SETTINGS`. Any other
    id runs MlpPolicy with the CartPole settings `SB3_SETTINGS`.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack

    vec_env_cls = {"DummyVecEnv": DummyVecEnv, "SubprocVecEnv": SubprocVecEnv}[vec_env]
    atari = env_id.startswith("ALE/")
    with torch_threads(threads):
        if atari:  # "ale_py:" makes gymnasium import ale_py (which registers ALE/) in SB3's own subprocesses too
            envs = make_atari_env(
                f"ale_py:{env_id}", n_envs=SB3_ENVS, seed=seed, vec_env_cls=vec_env_cls, env_kwargs={"frameskip": 1}
            )
            envs = VecFrameStack(envs, n_stack=SB3_FRAME_STACK)
        else:
            envs = make_vec_env(env_id, n_envs=SB3_ENVS, seed=seed, vec_env_cls=vec_env_cls)
        try:
            settings = SB3_ATARI_SETTINGS if atari else SB3_SETTINGS
            model = PPO("CnnPolicy" if atari else "MlpPolicy", envs, seed=seed, device="cpu", verbose=0, **settings)
            start = time.perf_counter()
            model.learn(total_timesteps=total_steps)
            elapsed = time.perf_counter() - start
        finally:
            envs.close()
    return rate(model.num_timesteps, elapsed, envs=SB3_ENVS, vec_env=vec_env, torch_threads=threads)
