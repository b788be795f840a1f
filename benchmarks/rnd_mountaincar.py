"""MountainCar-v0 with and without Random Network Distillation, on the same step budget and seeds.

    python benchmarks/rnd_mountaincar.py                 # 5 seeds x 2 settings, 300k steps each
    python benchmarks/rnd_mountaincar.py --quick         # 2 seeds, 150k steps
    python benchmarks/rnd_mountaincar.py --out DIR       # also results.json and rnd_mountaincar.png

MountainCar's reward is -1 per step until the car reaches the flag, which random actions almost
never do within the 200-step limit; plain PPO therefore sees no signal and stays at -200
(CleanRL's published result at 500k steps). An episode that ends with a return above -200 has
reached the goal. The benchmark reports, per seed, the env step at which that first happened
and the final deterministic evaluation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

from prl import ActorPool, Learner, evaluate, tuned_config
from prl.envs.factory import EnvFactory

SETTINGS = dict(
    workers=2,
    envs_per_worker=16,
    rollout_steps=128,
    lr=1e-3,
    gamma=0.99,
    gae_lambda=0.95,
    epochs=4,
    minibatch_size=512,
    ent_coef=0.01,
    normalize_obs=True,
    progress=False,
)
"""PPO settings shared by both arms (no reward normalization: with it, plain PPO finds the flag too)."""

RND_SETTINGS = dict(rnd=True, ext_coef=1.0, int_coef=5.0)
"""What the RND arm adds: options that only RND reads. MountainCar's extrinsic reward is a dense
-1 per step, so its advantages are larger than in the sparse-reward games RND was made for
(where ext_coef 2, int_coef 1, prl's defaults, are the paper's values): the intrinsic stream
needs more weight to steer."""

GOAL_RETURN = -200.0
"""Returns above this mean the episode ended at the flag, before the time limit."""


def run(seed: int, steps: int, rnd: bool) -> dict:
    """Train one seed; return the learning curve, the first step the goal was reached, and the evaluation."""
    config = tuned_config("MountainCar-v0", **SETTINGS, **(RND_SETTINGS if rnd else {}), steps=steps, seed=seed)
    learner = Learner(config)
    curve, first_goal, goals = [], None, 0
    started = time.perf_counter()
    with ActorPool(config, learner.policy) as pool:
        while learner.env_steps < config.steps:
            batch = pool.collect(learner.device)
            stats = learner.update(batch)
            pool.publish(learner.policy)
            returns, _ = batch.finished_episodes()
            reached = [r for r in returns if r > GOAL_RETURN]
            goals += len(reached)
            if reached and first_goal is None:
                first_goal = learner.env_steps
            mean = sum(returns) / len(returns) if returns else None
            curve.append((learner.env_steps, mean, stats.get("intrinsic_reward")))
    result = evaluate(learner.policy, EnvFactory("MountainCar-v0"), 20, seed)
    return {
        "seed": seed,
        "rnd": rnd,
        "first_goal_step": first_goal,
        "goal_episodes": goals,
        "eval_return_mean": result["return_mean"],
        "wall_s": time.perf_counter() - started,
        "curve": curve,
    }


def summarize(records: list[dict]) -> list[tuple]:
    """One table row per arm: seeds that reached the goal, when, and the final evaluation."""
    rows = []
    for rnd in (False, True):
        arm = [r for r in records if r["rnd"] == rnd]
        reached = [r["first_goal_step"] for r in arm if r["first_goal_step"] is not None]
        median_first = f"{statistics.median(reached):,.0f}" if reached else "-"
        evals = [r["eval_return_mean"] for r in arm]
        rows.append(
            (
                "PPO + RND" if rnd else "PPO",
                f"{len(reached)}/{len(arm)}",
                median_first,
                f"{statistics.mean(evals):.1f}",
                ", ".join(f"{r['eval_return_mean']:.0f}" for r in arm),
            )
        )
    return rows


def print_table(rows: list[tuple]) -> None:
    """A plain-text table on stdout."""
    header = ("setting", "reached goal", "median first step", "eval mean", "eval per seed")
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    for index, row in enumerate([header, *rows]):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def plot(records: list[dict], path: Path) -> None:
    """Mean episode return against env steps, one line per seed, coloured by setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    for record in records:
        points = [(step, value) for step, value, _ in record["curve"] if value is not None]
        color = "C1" if record["rnd"] else "C0"
        label = ("PPO + RND" if record["rnd"] else "PPO") if record["seed"] == records[0]["seed"] else None
        if points:
            axis.plot(*zip(*points), color=color, alpha=0.8, label=label)
        if record["first_goal_step"] is not None:
            axis.axvline(record["first_goal_step"], color=color, alpha=0.25, linestyle=":")
    axis.axhline(GOAL_RETURN, color="gray", linestyle="--", linewidth=1)
    axis.set(
        xlabel="env steps",
        ylabel="mean return of the episodes in each batch",
        title="MountainCar-v0: PPO with and without RND",
    )
    axis.legend(loc="upper left")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: Optional[list[str]] = None) -> int:
    """Run both arms over the seeds; print the table; with --out write results.json and the plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds and 150k steps")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 1 to 5)")
    parser.add_argument("--steps", type=int, help="env steps per run (default 300,000)")
    parser.add_argument("--out", type=Path, help="folder for results.json and rnd_mountaincar.png")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([1, 2] if args.quick else [1, 2, 3, 4, 5])
    steps = args.steps or (150_000 if args.quick else 300_000)
    records = []
    for seed in seeds:
        for rnd in (False, True):
            print(f"seed {seed}, {'PPO + RND' if rnd else 'PPO'}: {steps:,} steps", file=sys.stderr, flush=True)
            records.append(run(seed, steps, rnd))
    print_table(summarize(records))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(
            json.dumps({"settings": SETTINGS, "steps": steps, "runs": records}, indent=1)
        )
        plot(records, args.out / "rnd_mountaincar.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
