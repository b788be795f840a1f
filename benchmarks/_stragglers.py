"""The stragglers benchmark of `throughput.py --straggler`: sync, overlap and async mode on an env whose step time is heavy-tailed.

The env is `prl/Stragglers-v0` (`prl.envs.tasks.Stragglers`): CartPole-v1 where one step in 100,
drawn from the env's seed, first sleeps 50 ms. Each worker steps its envs one after another, so
no worker can go faster than one step per mean step time, and W workers not faster than
W / mean step time: the bound each run is held against. In sync and overlap modes every update
waits for the slowest worker's rollout, and one worker's unlucky run of sleeps stalls them all;
in async mode the learner takes whichever rollouts are full.
"""

from __future__ import annotations

import time
from typing import Callable

import gymnasium as gym

import prl.envs.tasks as tasks

ENV = tasks.STRAGGLERS
EVERY, DELAY_S = 100, 0.05
"""One step in EVERY sleeps DELAY_S: the env's defaults, named in the report."""

ENVS_PER_WORKER, ROLLOUT_STEPS = 4, 32
"""Each worker's rollout is 128 steps: about 1.3 slow steps on average, so rollouts differ by whole sleeps."""

PPO = {"epochs": 3, "minibatch-size": 256, "lr": 3e-3}
"""CartPole's preset update, so that the learner's share of each iteration is CartPole's."""

WORKERS = (2, 8)
MODES = ("sync", "overlap", "async")


def mean_step_s(steps: int = 20_000) -> float:
    """The env's mean step time: CartPole's own step behind the wrapper, timed here, plus the mean sleep."""
    env = tasks.Stragglers(gym.make("CartPole-v1"), EVERY, 0.0)
    env.reset(seed=0)
    started = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    env.close()
    return (time.perf_counter() - started) / steps + DELAY_S / EVERY


def train_args(workers: int, mode: str, steps: int) -> list[str]:
    """train.py flags of one run."""
    flags = {
        "env": ENV,
        "workers": workers,
        "envs-per-worker": ENVS_PER_WORKER,
        "rollout-steps": ROLLOUT_STEPS,
        "steps": steps,
        "mode": mode,
        "out": "TMP",
        **PPO,
    }
    return [part for name, value in flags.items() for part in (f"--{name}", str(value))] + [
        "--no-progress",
        "--eval-episodes",
        "0",
    ]


def measure_stragglers(run_train: Callable[[list[str]], dict], quick: bool, log: Callable[[str], None]) -> dict:
    """Every mode at 2 and 8 workers, one run at a time, each against the bound; with their ratios."""
    step_s = mean_step_s()
    log(f"stragglers: mean step time {step_s * 1e3:.3f} ms")
    runs = []
    for workers in WORKERS:
        steps = (10_000 if quick else 20_000) * workers  # about 5 to 10 s a run at the bound
        bound = workers / step_s
        for mode in MODES:
            log(f"stragglers: {workers} workers, {mode}")
            record = run_train(train_args(workers, mode, steps))
            record.update(workers=workers, mode=mode, bound_steps_per_s=bound)
            if "steps_per_s" in record:
                record["of_bound"] = record["steps_per_s"] / bound
            runs.append(record)
    return {
        "env": ENV,
        "every": EVERY,
        "delay_s": DELAY_S,
        "mean_step_s": step_s,
        "envs_per_worker": ENVS_PER_WORKER,
        "rollout_steps": ROLLOUT_STEPS,
        "runs": runs,
        "ratios": straggler_ratios(runs),
    }


def straggler_ratios(runs: list[dict]) -> list[dict]:
    """async / sync and async / bound for each worker count (the targets: 1.5x and 0.8 at 2 workers)."""
    rows = []
    for workers in sorted({run["workers"] for run in runs}):
        by_mode = {run["mode"]: run for run in runs if run["workers"] == workers and "steps_per_s" in run}
        if "async" not in by_mode:
            continue
        rate = by_mode["async"]["steps_per_s"]
        for mode in ("sync", "overlap"):
            if mode in by_mode:
                rows.append(
                    {
                        "ratio": f"stragglers, {workers} workers: async / {mode}",
                        "value": rate / by_mode[mode]["steps_per_s"],
                    }
                )
        rows.append({"ratio": f"stragglers, {workers} workers: async / bound", "value": by_mode["async"]["of_bound"]})
    return rows


def print_stragglers(results: dict) -> None:
    """The runs and their ratios as plain tables."""
    print(
        f"\nstragglers: {results['env']} (1 step in {results['every']} sleeps {results['delay_s'] * 1e3:.0f} ms), "
        f"{results['envs_per_worker']} envs x {results['rollout_steps']} steps per rollout, "
        f"mean step {results['mean_step_s'] * 1e3:.3f} ms"
    )
    print(f"{'workers':>8} {'mode':>8} {'steps/s':>10} {'bound':>10} {'of bound':>9} {'lag':>5}")
    for run in results["runs"]:
        if "steps_per_s" not in run:
            print(f"{run['workers']:>8} {run['mode']:>8}  skipped: {run.get('skipped')}")
            continue
        lag = run.get("policy_lag_mean")
        print(
            f"{run['workers']:>8} {run['mode']:>8} {run['steps_per_s']:>10,.0f} {run['bound_steps_per_s']:>10,.0f} "
            f"{run['of_bound']:>9.2f} {'-' if lag is None else f'{lag:.2f}':>5}"
        )
    for row in results["ratios"]:
        print(f"  {row['ratio']}: {row['value']:.2f}")
