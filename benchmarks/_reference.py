"""What prl is measured against: raw env stepping, one-process collection, AsyncVectorEnv and SB3.

Every function here runs one measurement for a fixed time or a fixed step budget and returns a
record made by `rate()`; `throughput.py` decides what to run and prints the table. Nothing here
uses prl's processes: prl only lends its env recipe (so that an Atari id gets the same
preprocessing everywhere) and its policy network, so that every collection loop pays for the
same forward pass. A PettingZoo id (`pettingzoo:<module>`) is stepped here as a ParallelEnv,
without prl's agent rows, and counted in agent-steps (`ParallelRows`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import time
from functools import partial
from typing import Any, Callable, Iterator, Optional

import gymnasium as gym
import numpy as np
import torch
from threadpoolctl import threadpool_limits

from prl.config import PolicyConfig
from prl.envs import agents as env_agents
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


def is_agents(env_id: str) -> bool:
    """True for a PettingZoo id, whose env is a ParallelEnv with an agent per row."""
    return env_id.startswith(env_agents.PREFIX)


def step_randomly(env_id: str, seconds: float, barrier, results) -> None:
    """Process entry point: step one env with random actions for `seconds`; put (steps, elapsed)."""
    if is_agents(env_id):
        return step_agents_randomly(env_id, seconds, barrier, results)
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


def step_agents_randomly(env_id: str, seconds: float, barrier, results) -> None:
    """`step_randomly` for a PettingZoo ParallelEnv: every live agent acts at random, and a step counts
    as many agent-steps as agents acted; the env resets when its agents list is empty."""
    env = EnvFactory(env_id)()
    agents = list(env.possible_agents)
    for index, agent in enumerate(agents):
        env.action_space(agent).seed(index)
    joints = [{agent: env.action_space(agent).sample() for agent in agents} for _ in range(ACTION_POOL)]
    env.reset(seed=0)
    barrier.wait()
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for joint in joints:
            acting = len(env.agents)
            if acting != len(agents):  # some agents have finished: only the others act
                joint = {agent: joint[agent] for agent in env.agents}
            env.step(joint)
            steps += acting
            if not env.agents:
                env.reset()
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


def drive(vector_env: Any, act: Callable[[np.ndarray], np.ndarray], spec: EnvSpec, seconds: float) -> dict:
    """Step `vector_env` (a gymnasium VectorEnv, or `ParallelRows`) for `seconds`, `act` choosing every
    action in this process.

    Flat observations reach `act` as float32, as in prl's workers; other layouts as prl's workers
    stack them (`ObsLayout.stack`: one array per leaf, uint8 images stay uint8). Steps are every
    env's, or the agent-steps that `ParallelRows` counts.
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
    counted = getattr(vector_env, "agent_steps", None)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        obs = step(obs)
        steps += 1
    elapsed = time.perf_counter() - start
    if counted is not None:
        return rate(vector_env.agent_steps - counted, elapsed, envs=vector_env.num_envs)
    return rate(steps * vector_env.num_envs, elapsed, envs=vector_env.num_envs)


def _put(batch: Any, row: int, value: Any) -> None:
    """Write one observation into row `row` of a batch made by `gym.vector.utils.create_empty_array`."""
    if isinstance(batch, dict):
        for key, part in batch.items():
            _put(part, row, value[key])
    elif isinstance(batch, tuple):
        for part, item in zip(batch, value):
            _put(part, row, item)
    else:
        batch[row] = value


class ParallelRows:
    """`rows` agent rows of `rows / agents` PettingZoo ParallelEnvs in one process: the collection
    floor's vector env for an agent env, with the part of gymnasium's VectorEnv API `drive` uses.

    This is the one-process floor, so no prl code steps the envs (not prl's `AgentGroup` rows,
    whose cost the efficiency must include). SuperSuit's `concat_vec_envs_v1` over
    `pettingzoo_env_to_vec_env_v1`, the usual way to vectorize a ParallelEnv, stepped
    simple_spread about 10% slower than prl's own rows do, so a floor built on it would flatter
    prl; this loop was the fastest of the three (1 to 2% above prl's rows). Each step builds every env's joint action from its live
    agents' rows, steps it once, and writes each agent's observation, reward and ends into its
    row; an env whose agents have all finished (`env.agents` empty) resets in the same step, as
    prl's workers reset it. A finished agent's row keeps its last observation until its env
    resets, and its action is dropped. `agent_steps` counts the agents that acted.
    """

    def __init__(self, env_id: str, rows: int):
        made = EnvFactory(env_id)()
        self.agents = list(made.possible_agents)
        if rows % len(self.agents):
            made.close()
            raise ValueError(f"{env_id} has {len(self.agents)} agents, each a row, so {rows} rows is not whole envs")
        self.envs = [made] + [EnvFactory(env_id)() for _ in range(rows // len(self.agents) - 1)]
        self.row_of = {agent: index for index, agent in enumerate(self.agents)}
        self.num_envs = rows
        self.single_observation_space = made.observation_space(self.agents[0])
        self.obs = gym.vector.utils.create_empty_array(self.single_observation_space, rows, fn=np.zeros)
        self.rewards = np.zeros(rows, dtype=np.float32)
        self.terminated = np.zeros(rows, dtype=bool)
        self.truncated = np.zeros(rows, dtype=bool)
        self.agent_steps = 0

    def _observe(self, first: int, observations: dict) -> None:
        for agent, obs in observations.items():
            _put(self.obs, first + self.row_of[agent], obs)

    def reset(self, seed: Optional[int] = None) -> tuple[Any, dict]:
        """Reset every env (env k with seed + k) and return the rows' observations."""
        for index, env in enumerate(self.envs):
            observations, _ = env.reset(seed=None if seed is None else seed + index)
            self._observe(index * len(self.agents), observations)
        return self.obs, {}

    def step(self, actions: np.ndarray) -> tuple:
        """Step every env once with its live agents' actions (row i's is `actions[i]`)."""
        count = len(self.agents)
        for index, env in enumerate(self.envs):
            first = index * count
            acting = env.agents
            self.agent_steps += len(acting)
            joint = {agent: actions[first + self.row_of[agent]] for agent in acting}
            observations, rewards, terminations, truncations, _ = env.step(joint)
            for agent, reward in rewards.items():
                row = first + self.row_of[agent]
                self.rewards[row] = reward
                self.terminated[row] = terminations[agent]
                self.truncated[row] = truncations[agent]
            if not env.agents:
                observations, _ = env.reset()
            self._observe(first, observations)
        return self.obs, self.rewards, self.terminated, self.truncated, {}

    def close(self) -> None:
        for env in self.envs:
            env.close()


def vector_name(spec: EnvSpec) -> str:
    """The collection floor's vector env for `spec`: SyncVectorEnv, or ParallelRows for a PettingZoo env."""
    return "ParallelRows" if spec.agents else "SyncVectorEnv"


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
    `policy` is the network's settings (default: prl's default network). For a PettingZoo env,
    `num_envs` agent rows of `ParallelRows`, in agent-steps/s.
    """
    policy = policy or PolicyConfig()
    act = torch_actor(spec, policy) if actor == "torch" else worker_actor(spec, policy)
    if act is None:
        return {"envs": num_envs, "actor": actor, "skipped": "prl's workers act with the torch policy here"}
    envs: Any
    if spec.agents:
        envs = ParallelRows(env_id, num_envs)
    else:
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
