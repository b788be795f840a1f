"""Learning quality: each preset for N seeds, against the returns tuned PPO reaches elsewhere.

    python benchmarks/learning.py --suite classic --seeds 3 --out DIR
    python benchmarks/learning.py --suite mujoco --seeds 3 --out DIR    # needs the mujoco extra
    python benchmarks/learning.py --suite minigrid --seeds 3 --out DIR  # needs the minigrid extra
    python benchmarks/learning.py --suite atari --seeds 1 --out DIR     # needs the atari extra
    python benchmarks/learning.py --suite atari-memory --seeds 1 --out DIR  # 4 frames beside 1 frame + LSTM
    python benchmarks/learning.py --suite memory --seeds 3 --sb3-contrib --out DIR  # the popgym and bench extras
    python benchmarks/learning.py --suite masks --seeds 3 --sb3-contrib --out DIR   # the bench extra
    python benchmarks/learning.py --suite agents --seeds 3 --sb3-contrib --out DIR  # the mpe2 and bench extras
    python benchmarks/learning.py --suite async --seeds 1 --out DIR     # sync beside --mode async (mujoco, atari)
    python benchmarks/learning.py --suite Acrobot-v1 Hopper-v5 --seeds 1 --no-preset --out DIR
    python benchmarks/learning.py --suite classic --quick               # a tenth of each budget, one seed
    python benchmarks/learning.py --replot DIR --reference "CleanRL ppo_atari=FILE"  # redraw, another system beside

Each run is `scripts/train.py --env ENV --seed S --steps N` with the env's preset (or, with
`--no-preset`, prl's defaults alone), one run at a time, timed from outside as a whole process.
Each run ends with a deterministic evaluation over 20 episodes. DIR receives `learning.json`
(every run), `learning.md` (the table) and `learning_ENV.png` (return against env steps and
against wall time, mean and spread over seeds) per env, and each run's folder.

The memory suite holds the partially observable tasks (`prl/CartPoleNoVel-v1`, three POPGym
tasks) and one ablation: CartPoleNoVel with `--recurrent none`, which must stay below its
ceiling (memory is what solves it). The masks suite holds prl's game of illegal moves
(`prl/IllegalMoves-v0`) and its ablation with `--no-action-masks`, which must stay below its
ceiling. The agents suite holds two PettingZoo particle envs (`mpe2`), whose steps are
agent-steps and whose returns are team returns, the sum over an env's agents. The async suite
trains CartPole-v1, HalfCheetah-v5 and ALE/Breakout-v5 with their presets in sync mode and with
`--mode async` (V-trace), at equal env steps: the async row's plot draws the sync row's first
seed beside it, and a third table gives async / sync for the return, the wall time and the
steps/s, with the mean policy lag.
`--sb3-contrib` also trains the SB3 reference for the task (sb3-contrib's RecurrentPPO with
rl-zoo3's settings, or its MaskablePPO with prl's, or SB3's PPO shared by the agents through
SuperSuit with prl's; `benchmarks/sb3_references.py`) once on each env that has a budget for it, timed the same way, right after prl's runs: its curve is drawn
beside prl's and a second table gives the ratio of the two whole-process wall times.

The atari-memory suite trains Breakout twice, from the preset's stack of 4 frames and from one
frame with an LSTM of 128 (CleanRL's ppo_atari_lstm, otherwise the same settings): the second
must remember what the stack shows, the ball's direction. It is meant for a machine with a
GPU and many cores.

`--reference LABEL=FILE` draws another system's run beside prl's: FILE holds one JSON line per
finished episode, `{"env_steps": ..., "wall_s": ..., "return": ...}`, smoothed here over the
last 100 episodes as prl's own curve is. A reference applies to every env of the command, so
give it with one env. `--replot DIR` redraws DIR's plots from its learning.json without training.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from prl.run.logs import EpisodeWindow, format_return

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "scripts" / "train.py"
CONTRIB_SCRIPT = REPO / "benchmarks" / "sb3_references.py"
CONTRIB_LABELS = {
    "recurrent": "sb3-contrib RecurrentPPO",
    "maskable": "sb3-contrib MaskablePPO",
    "shared": "SB3 PPO + SuperSuit",
}
"""benchmarks/sb3_references.py's algorithms, by the label their curves and tables carry."""
EVAL_EPISODES = 20
RUN_TIMEOUT_S = 3600
"""A run that takes longer than this is stuck: it is recorded as failed and the suite goes on."""


COUNT_RECALL_STEPS = 3_000_000


ASYNC = ("--mode", "async")
"""The flags of an async row: workers never wait for the learner, V-trace corrects the lag."""


@dataclass(frozen=True)
class Target:
    """What a run of `env` is measured against: its step budget and the figures reached elsewhere."""

    env: str
    steps: int
    target: Optional[float]
    """The mean evaluation return that counts as learned; None where only the curve is compared."""
    rl_zoo: str
    cleanrl: str
    default_steps: Optional[int] = None
    default_target: Optional[float] = None
    """With --no-preset: the budget and return that prl's defaults alone must reach (where set)."""
    args: tuple[str, ...] = ()
    """train.py flags of this row besides the preset's (an ablation's)."""
    ceiling: bool = False
    """The target is a return the run must stay below: an ablation that should not learn."""
    published: str = "-"
    """Another published figure for the task, with its source."""
    contrib: Optional[tuple[str, int]] = None
    """With --sb3-contrib: sb3-contrib's reference for the task (`CONTRIB_LABELS`) and its budget; None: none."""

    @property
    def name(self) -> str:
        """How --suite and the table name this row: the env id, and the row's own flags if any."""
        return " ".join((self.env, *self.args))


TARGETS = {
    t.name: t
    for t in (
        Target("CartPole-v1", 100_000, 500.0, "500 (100k)", "490 (500k)"),
        Target("Acrobot-v1", 500_000, -75.0, "-73.5 (1M)", "-86 (500k)", 300_000, -100.0),
        Target("MountainCar-v0", 1_000_000, -110.0, "-110 (1M)", "-200 (500k)"),
        Target("MountainCarContinuous-v0", 100_000, 90.0, "88 (20k)", "-"),
        Target("Pendulum-v1", 200_000, -175.0, "-172 (100k)", "fails (8M)"),
        Target("LunarLander-v3", 1_000_000, 240.0, "242 (1M)", "-"),
        Target("HalfCheetah-v5", 1_000_000, 5000.0, "5819 (1M)", "1443 (1M)", 1_000_000, 1500.0),
        Target("Hopper-v5", 1_000_000, 2400.0, "2410 (1M)", "2383 (1M)", 1_000_000, 1000.0),
        Target("Walker2d-v5", 1_000_000, 3400.0, "3479 (1M)", "2288 (1M)"),
        Target("Ant-v5", 1_000_000, 2000.0, "-", "-"),
        Target("MiniGrid-Empty-5x5-v0", 50_000, 0.9, "-", "-"),
        Target("MiniGrid-DoorKey-5x5-v0", 150_000, 0.9, "-", "-"),
        Target("ALE/Breakout-v5", 500_000, None, "398 (10M)", "415 (10M)"),
        # The asynchronous mode beside each sync row above (issue targets: CartPole 475 within 100k;
        # HalfCheetah's return within 10% of sync's at 1M, 1.3x its speed).
        Target("CartPole-v1", 100_000, 475.0, "-", "-", args=ASYNC),
        Target("HalfCheetah-v5", 1_000_000, None, "-", "-", args=ASYNC),
        Target("ALE/Breakout-v5", 500_000, None, "-", "-", args=ASYNC),
        # One frame and an LSTM of 128 on the CNN's features, CleanRL's ppo_atari_lstm (whose other
        # settings are ppo_atari's, the preset's): the curve beside the 4-frame row's.
        Target(
            "ALE/Breakout-v5",
            500_000,
            None,
            "-",
            "-",
            args=("--env-kwargs", '{"frame_stack":1}', "--recurrent", "lstm", "--recurrent-size", "128"),
        ),
        Target(
            "prl/CartPoleNoVel-v1",
            200_000,
            475.0,
            "500 (100k, RecurrentPPO)",
            "-",
            published="RecurrentPPO 500 in 612 s (ANCHORS)",
            contrib=("recurrent", 100_000),
        ),
        Target("prl/CartPoleNoVel-v1", 200_000, 200.0, "-", "-", args=("--recurrent", "none"), ceiling=True),
        # POPGym's returns lie in [-1, 1]. Its paper's figures (Morad et al., ICLR 2023, Appendix B:
        # MMER over 3 trials of RLlib PPO, about 15M steps each) as transcribed by a third party;
        # docs/learning.md says which could not be checked against the paper itself.
        Target("popgym-PositionOnlyCartPoleEasy-v0", 200_000, 1.0, "-", "-", published="POPGym GRU 1.00 (15M)"),
        Target("popgym-RepeatPreviousEasy-v0", 300_000, 1.0, "-", "-", published="POPGym GRU 1.00 (15M)"),
        Target(
            "popgym-CountRecallEasy-v0",
            COUNT_RECALL_STEPS,
            0.509,
            "-",
            "-",
            published="POPGym LSTM 0.509, GRU 0.177 (15M)",
        ),
        # prl's game of illegal moves: the best play scores 36.3 over the 20 evaluation episodes of
        # seed 1 (prl.envs.tasks.best_move); with masks prl must come within 5% of it, and without
        # them (the mask then an input) stay clearly below, where illegal moves end episodes.
        Target(
            "prl/IllegalMoves-v0",
            100_000,
            34.5,
            "-",
            "-",
            published="best play 36.3",
            contrib=("maskable", 100_000),
        ),
        Target("prl/IllegalMoves-v0", 100_000, 30.0, "-", "-", args=("--no-action-masks",), ceiling=True),
        # Team returns (the sum over the agents) at agent-steps; random play: -80 +- 23 on simple_spread,
        # -59 +- 21 on simple_reference (200 episodes each, docs/learning.md). MAPPO's -120 on Spread (its
        # code's metric: every agent gets the team's summed reward, with a -1 self-collision each step;
        # 20M env steps = 60M agent-steps) is about -22.5 as a team return here, by docs/learning.md's
        # conversion.
        Target(
            "pettingzoo:mpe2.simple_spread_v3",
            3_000_000,
            -50.0,
            "-",
            "-",
            published="MAPPO about -22.5 (60M)",
            contrib=("shared", 3_000_000),
        ),
        Target("pettingzoo:mpe2.simple_reference_v3", 2_000_000, -40.0, "-", "-", contrib=("shared", 2_000_000)),
    )
}
SUITES = {
    "classic": [
        "CartPole-v1",
        "Acrobot-v1",
        "MountainCar-v0",
        "MountainCarContinuous-v0",
        "Pendulum-v1",
        "LunarLander-v3",
    ],
    "mujoco": ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"],
    "minigrid": ["MiniGrid-Empty-5x5-v0", "MiniGrid-DoorKey-5x5-v0"],
    "atari": ["ALE/Breakout-v5"],
    "atari-memory": [
        "ALE/Breakout-v5",
        'ALE/Breakout-v5 --env-kwargs {"frame_stack":1} --recurrent lstm --recurrent-size 128',
    ],
    "masks": ["prl/IllegalMoves-v0", "prl/IllegalMoves-v0 --no-action-masks"],
    "agents": ["pettingzoo:mpe2.simple_spread_v3", "pettingzoo:mpe2.simple_reference_v3"],
    "async": [
        "CartPole-v1",
        "CartPole-v1 --mode async",
        "HalfCheetah-v5",
        "HalfCheetah-v5 --mode async",
        "ALE/Breakout-v5",
        "ALE/Breakout-v5 --mode async",
    ],
    "memory": [
        "prl/CartPoleNoVel-v1",
        "prl/CartPoleNoVel-v1 --recurrent none",
        "popgym-PositionOnlyCartPoleEasy-v0",
        "popgym-RepeatPreviousEasy-v0",
        "popgym-CountRecallEasy-v0",
    ],
}
GOAL_ENVS = {"MountainCar-v0": -200.0}
"""Envs whose target also asks that every seed reach the goal: a return above this means it did."""


def log(message: str) -> None:
    print(f"[learning] {message}", file=sys.stderr, flush=True)


def file_name(name: str) -> str:
    """A row's name as one file name: namespaced ids such as ALE/Breakout-v5 hold a slash, ablations flags."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", name).strip("-")


def budget(target: Target, no_preset: bool, quick: bool) -> int:
    steps = (target.default_steps or target.steps) if no_preset else target.steps
    return max(10_000, steps // 10) if quick else steps


def run_timed(args: list[str], folder: Path) -> tuple[dict, float, Optional[str]]:
    """Run one script as a whole process that writes folder/summary.json: (the summary, its wall time
    seen from outside, None), or ({}, 0, why it failed)."""
    started = time.perf_counter()
    try:
        process = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {}, 0.0, f"ran past {RUN_TIMEOUT_S} s"
    wall_s = time.perf_counter() - started
    summary_file = folder / "summary.json"
    if process.returncode != 0 or not summary_file.exists():
        last = (process.stderr.strip().splitlines() or ["no output"])[-1]
        return {}, 0.0, f"exit code {process.returncode}: {last}"
    return json.loads(summary_file.read_text()), wall_s, None


def train_one(env: str, seed: int, steps: int, folder: Path, no_preset: bool, extra: list[str]) -> dict:
    """One scripts/train.py run; returns its summary, wall time and the learning curve from metrics.jsonl."""
    args = [sys.executable, str(TRAIN_SCRIPT), "--env", env, "--seed", str(seed), "--steps", str(steps)]
    args += ["--out", str(folder), "--overwrite", "--no-progress", "--eval-episodes", str(EVAL_EPISODES)]
    if no_preset:
        args += ["--no-preset"]
    args += extra
    summary, wall_s, failed = run_timed(args, folder)
    if failed:
        return {"env": env, "seed": seed, "failed": failed}
    curve = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    # A PettingZoo env's figures are its team's (the sum over its agents); the per-agent ones are kept beside.
    team = "eval_team_return_mean" in summary
    prefix = "team_" if team else ""
    measured = f"{prefix or 'episode_'}return_mean"
    return {
        "env": env,
        "seed": seed,
        "steps": summary["env_steps"],
        "eval_return_mean": summary[f"eval_{prefix}return_mean"],
        "eval_return_std": summary[f"eval_{prefix}return_std"],
        **({"eval_agent_return_mean": summary["eval_return_mean"]} if team else {}),
        "train_return_last100": curve[-1].get(measured) if curve else None,
        "process_wall_s": wall_s,
        "steps_per_s": summary.get("steps_per_s"),
        "policy_lag_mean": summary.get("policy_lag_mean"),
        "curve": [
            {"env_steps": r["env_steps"], "wall_s": r["wall_s"], "return": r[measured]}
            for r in curve
            if r.get(measured) is not None
        ],
    }


def summarize(env: str, runs: list[dict], no_preset: bool, quick: bool) -> dict:
    """One table row: the mean and std over seeds of each run's final evaluation, and how it compares."""
    target = TARGETS.get(env)
    done = [r for r in runs if "failed" not in r]
    row: dict = {"env": env, "seeds": len(runs), "finished": len(done)}
    if not done:
        return row | {"failed": "; ".join(r["failed"] for r in runs)}
    evals = [r["eval_return_mean"] for r in done]
    row |= {
        "steps": done[0]["steps"],
        "eval_mean": statistics.mean(evals),
        "eval_std": statistics.pstdev(evals),
        "train_last100_mean": statistics.mean(r["train_return_last100"] for r in done),
        "wall_s_mean": statistics.mean(r["process_wall_s"] for r in done),
        "steps_per_s_mean": statistics.mean(r.get("steps_per_s") or 0.0 for r in done),
        "policy_lag_mean": statistics.mean(r.get("policy_lag_mean") or 0.0 for r in done),
    }
    goal = (target.default_target if no_preset else target.target) if target else None
    if goal is not None and not quick:
        met = (row["eval_mean"] < goal if target.ceiling else row["eval_mean"] >= goal) and len(done) == len(runs)
        if env in GOAL_ENVS:
            reached = sum(e > GOAL_ENVS[env] for e in evals)
            row["goal_reached"] = f"{reached}/{len(runs)}"
            met = met and reached == len(runs)
        row |= {"target": goal, "met": met}
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| env | env steps | eval return (mean +- std over seeds) | last 100 training episodes | wall time | target | met | rl-zoo3 | CleanRL | elsewhere |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        target = TARGETS.get(row["env"])
        zoo, clean, published = (target.rl_zoo, target.cleanrl, target.published) if target else ("-", "-", "-")
        if "failed" in row:
            lines.append(
                f"| {row['env']} | - | failed: {row['failed']} | - | - | - | no | {zoo} | {clean} | {published} |"
            )
            continue
        bound = "<" if target and target.ceiling else ">="
        speed = f" ({row['steps_per_s_mean']:,.0f} steps/s)" if row.get("steps_per_s_mean") else ""
        goal = row.get("target")
        met = "-" if goal is None else ("yes" if row["met"] else "no")
        if "goal_reached" in row:
            met += f" (goal in {row['goal_reached']} seeds)"
        mean = row["eval_mean"]
        lines.append(
            f"| {row['env']} | {row['steps']:,} | {format_return(mean)} +- {format_return(row['eval_std'], like=mean)} "
            f"({row['finished']} seeds) | {format_return(row['train_last100_mean'], like=mean)} | "
            f"{row['wall_s_mean']:.0f} s{speed} | "
            f"{'-' if goal is None else f'{bound} {goal:g}'} | {met} | {zoo} | {clean} | {published} |"
        )
    return "\n".join(lines)


def contrib_one(algorithm: str, env: str, steps: int, folder: Path) -> dict:
    """One benchmarks/sb3_references.py run, timed as a whole process; its summary and curve, as a reference."""
    label = CONTRIB_LABELS[algorithm]
    args = [sys.executable, str(CONTRIB_SCRIPT), algorithm, "--env", env, "--steps", str(steps), "--out", str(folder)]
    summary, wall_s, failed = run_timed(args, folder)
    if failed:
        return {"label": label, "failed": failed}
    episodes = load_reference(f"{label}={folder / 'episodes.jsonl'}")
    return {**episodes, **summary, "process_wall_s": wall_s}


def side_by_side(env: str, runs: list[dict], reference: dict) -> dict:
    """prl's runs of `env` against one sb3-contrib run: evaluations, whole-process wall times and env steps
    per second while training (learning included), and the ratios of the last two."""
    done = [r for r in runs if "failed" not in r]
    row: dict = {"env": env, "reference": reference["label"]}
    if not done or "failed" in reference:
        return row | {"failed": reference.get("failed", "every prl run failed")}
    prl_wall = statistics.mean(r["process_wall_s"] for r in done)
    prl_rate = statistics.mean(r["steps_per_s"] for r in done)  # while training, as the reference's
    return row | {
        "prl_steps": done[0]["steps"],
        "prl_eval_mean": statistics.mean(r["eval_return_mean"] for r in done),
        "prl_wall_s": prl_wall,
        "reference_steps": reference["steps"],
        "reference_eval_mean": reference["eval_return_mean"],
        "reference_wall_s": reference["process_wall_s"],
        "reference_steps_per_s": reference["steps_per_s"],
        "speedup": reference["process_wall_s"] / prl_wall,
        "prl_steps_per_s": prl_rate,
        "steps_per_s_ratio": prl_rate / reference["steps_per_s"],
    }


def side_by_side_table(rows: list[dict]) -> str:
    lines = [
        "| env | prl: env steps, eval, wall time (mean over seeds) | reference: env steps, eval, wall time "
        "| reference | reference wall / prl wall | prl steps/s / reference steps/s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['env']} | - | failed: {row['failed']} | {row['reference']} | - | - |")
            continue
        lines.append(
            f"| {row['env']} | {row['prl_steps']:,}, {format_return(row['prl_eval_mean'])}, {row['prl_wall_s']:.0f} s "
            f"({row['prl_steps_per_s']:,.0f} steps/s) | "
            f"{row['reference_steps']:,}, {format_return(row['reference_eval_mean'])}, {row['reference_wall_s']:.0f} s "
            f"({row['reference_steps_per_s']:,.0f} steps/s) | {row['reference']} | {row['speedup']:.1f}x | "
            f"{row['steps_per_s_ratio']:.1f}x |"
        )
    return "\n".join(lines)


def async_beside_sync(rows: list[dict]) -> list[dict]:
    """Each async row against the sync row of its env in the same results: the ratios of the mean evaluation,
    whole-process wall time and steps/s, and the async runs' mean policy lag."""
    by_name = {row["env"]: row for row in rows}
    compared = []
    for row in rows:
        target = TARGETS.get(row["env"])
        sync = by_name.get(target.env) if target and target.args == ASYNC else None
        if sync is None or "failed" in row or "failed" in sync:
            continue
        compared.append(
            {
                "env": target.env,
                "steps": row["steps"],
                "sync_eval_mean": sync["eval_mean"],
                "async_eval_mean": row["eval_mean"],
                "eval_ratio": row["eval_mean"] / sync["eval_mean"] if sync["eval_mean"] else None,
                "sync_wall_s": sync["wall_s_mean"],
                "async_wall_s": row["wall_s_mean"],
                "speedup": sync["wall_s_mean"] / row["wall_s_mean"],
                "steps_per_s_ratio": row["steps_per_s_mean"] / sync["steps_per_s_mean"],
                "policy_lag_mean": row.get("policy_lag_mean"),
            }
        )
    return compared


def async_table(rows: list[dict]) -> str:
    lines = [
        "| env | env steps | eval: sync, async (async / sync) | wall time: sync, async (sync / async) "
        "| steps/s async / sync | mean policy lag (async) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ratio = "-" if row["eval_ratio"] is None else f"{row['eval_ratio']:.2f}"
        lag = row["policy_lag_mean"]
        lines.append(
            f"| {row['env']} | {row['steps']:,} | {format_return(row['sync_eval_mean'])}, "
            f"{format_return(row['async_eval_mean'])} ({ratio}) | {row['sync_wall_s']:.0f} s, "
            f"{row['async_wall_s']:.0f} s ({row['speedup']:.2f}x) | {row['steps_per_s_ratio']:.2f}x | "
            f"{'-' if lag is None else f'{lag:.2f}'} |"
        )
    return "\n".join(lines)


def load_reference(option: str) -> dict:
    """A `LABEL=FILE` reference: its episodes smoothed into a curve, as prl's `episode_return_mean` is."""
    label, _, path = option.partition("=")
    if not label or not path:
        raise ValueError(f"--reference takes LABEL=FILE, got {option!r}")
    window = EpisodeWindow()
    curve = []
    for line in Path(path).read_text().splitlines():
        episode = json.loads(line)
        window.add([episode["return"]], [episode.get("length", 0)])
        curve.append({"env_steps": episode["env_steps"], "wall_s": episode["wall_s"], "return": window.return_mean()})
    if not curve:
        raise ValueError(f"{path} holds no episode")
    return {"label": label, "file": Path(path).name, "episodes": len(curve), "curve": curve}


def plot(env: str, runs: list[dict], path: Path, references: tuple = ()) -> None:
    """Training return against env steps and against wall time: the mean over seeds and its min-max band.

    Each of `references` (from `load_reference`) is drawn beside it as one line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [r for r in runs if "failed" not in r and r["curve"]]
    if not done:
        return
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, label in ((axes[0], "env_steps", "env steps"), (axes[1], "wall_s", "wall time (s)")):
        grid = np.linspace(0, min(max(p[key] for p in r["curve"]) for r in done), 100)
        curves = np.array(
            [np.interp(grid, [p[key] for p in r["curve"]], [p["return"] for p in r["curve"]]) for r in done]
        )
        axis.plot(grid, curves.mean(0), label=f"prl, mean of {len(done)} seed(s)")
        axis.fill_between(grid, curves.min(0), curves.max(0), alpha=0.25, label="min to max")
        for index, reference in enumerate(references):
            points = reference["curve"]
            axis.plot(
                [p[key] for p in points], [p["return"] for p in points], color=f"C{index + 1}", label=reference["label"]
            )
        axis.set_xlabel(label)
        axis.set_ylabel("mean return, last 100 training episodes")
        axis.grid(alpha=0.3)
    target = TARGETS.get(env)
    if target and target.target is not None:
        for axis in axes:
            label = "ceiling" if target.ceiling else "target"
            axis.axhline(target.target, color="gray", linestyle="--", linewidth=1, label=label)
    axes[0].legend(loc="lower right" if not references else "upper left")
    figure.suptitle(f"{env}: prl" + "".join(f" and {r['label']}" for r in references))
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def replot(folder: Path, references: tuple) -> int:
    """Redraw each env's plot in `folder` from its learning.json, with `references` (or those it holds)."""
    results_file = folder / "learning.json"
    if not results_file.exists():
        print(
            f"learning.py: error: {results_file} does not exist; give the --out folder of a finished run",
            file=sys.stderr,
        )
        return 2
    results = json.loads(results_file.read_text())
    if references:
        results["references"] = {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in references}
        results_file.write_text(json.dumps(results, indent=2))
    else:
        references = tuple({"label": label, **value} for label, value in results.get("references", {}).items())
    for env, runs in results["runs"].items():
        plot(env, runs, folder / f"learning_{file_name(env)}.png", references)
        log(f"redrew {folder / f'learning_{file_name(env)}.png'}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--suite",
        nargs="+",
        default=["classic"],
        help="classic, mujoco, minigrid, atari, atari-memory, memory, masks, agents, async, or rows by name",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per env, 1 to N (default 3)")
    parser.add_argument(
        "--quick", action="store_true", help="a tenth of each step budget and one seed, to try the pipeline"
    )
    parser.add_argument("--no-preset", action="store_true", help="train with prl's defaults, not the env's preset")
    parser.add_argument("--out", default="learning-results", help="folder for the results (default learning-results)")
    parser.add_argument(
        "--train-args",
        default="",
        help='extra flags for every train.py run, as one string with =: --train-args="--lr 1e-3"',
    )
    parser.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="LABEL=FILE",
        help="another system's episodes (JSON lines) to draw beside prl's curve; repeatable",
    )
    parser.add_argument(
        "--sb3-contrib",
        action="store_true",
        help="also train the SB3 reference (RecurrentPPO, MaskablePPO, PPO + SuperSuit) once on each env that has one (the bench extra)",
    )
    parser.add_argument("--replot", metavar="DIR", help="redraw DIR's plots from its learning.json, without training")
    args = parser.parse_args(argv)
    try:
        references = tuple(load_reference(option) for option in args.reference)
    except (OSError, ValueError, KeyError) as error:
        parser.error(f"cannot read --reference: {error}")
    if args.replot:
        return replot(Path(args.replot), references)
    envs = [env for name in args.suite for env in SUITES.get(name, [name])]
    unknown = [env for env in envs if env not in TARGETS]
    if unknown:
        parser.error(f"no target is known for {', '.join(unknown)}; choose from {', '.join(TARGETS)} or a suite")
    seeds = 1 if args.quick else args.seeds
    if seeds < 1:
        parser.error("--seeds must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        "command": "python benchmarks/learning.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "no_preset": args.no_preset,
        "references": {r["label"]: {k: v for k, v in r.items() if k != "label"} for r in references},
        "runs": {},
        "rows": [],
    }
    for env in envs:
        target = TARGETS[env]
        steps = budget(target, args.no_preset, args.quick)
        runs = []
        for seed in range(1, seeds + 1):
            log(f"{env}, seed {seed} of {seeds}, {steps:,} steps")
            runs.append(
                train_one(
                    target.env,
                    seed,
                    steps,
                    out / "runs" / f"{file_name(env)}-seed{seed}",
                    args.no_preset,
                    [*target.args, *args.train_args.split()],
                )
            )
            last = runs[-1]
            if "failed" in last:
                log(f"  failed: {last['failed']}")
            else:
                log(f"  eval {format_return(last['eval_return_mean'])} in {last['process_wall_s']:.0f} s")
        results["runs"][env] = runs
        results["rows"].append(summarize(env, runs, args.no_preset, args.quick))
        env_references = references
        sync_runs = results["runs"].get(target.env) if target.args == ASYNC else None
        if sync_runs and "failed" not in sync_runs[0]:  # the sync row of the same env, drawn beside
            env_references = (*references, {"label": "sync mode (seed 1)", "curve": sync_runs[0]["curve"]})
        if args.sb3_contrib and target.contrib is not None:
            algorithm, contrib_steps = target.contrib
            reference_steps = budget(dataclasses.replace(target, steps=contrib_steps), False, args.quick)
            log(f"{env}, {CONTRIB_LABELS[algorithm]}, seed 1, {reference_steps:,} steps")
            folder = out / "runs" / f"{file_name(env)}-sb3_contrib"
            reference = contrib_one(algorithm, target.env, reference_steps, folder)
            results.setdefault("sb3_contrib", {})[env] = {k: v for k, v in reference.items() if k != "curve"}
            results.setdefault("side_by_side", []).append(side_by_side(env, runs, reference))
            if "failed" in reference:
                log(f"  failed: {reference['failed']}")
            else:
                log(f"  eval {format_return(reference['eval_return_mean'])} in {reference['process_wall_s']:.0f} s")
                env_references = (*references, reference)
        plot(env, runs, out / f"learning_{file_name(env)}.png", env_references)
        (out / "learning.json").write_text(json.dumps(results, indent=2))
    markdown = table(results["rows"])
    if results.get("side_by_side"):
        markdown += "\n\n" + side_by_side_table(results["side_by_side"])
    results["async_beside_sync"] = async_beside_sync(results["rows"])
    if results["async_beside_sync"]:
        markdown += "\n\n" + async_table(results["async_beside_sync"])
        (out / "learning.json").write_text(json.dumps(results, indent=2))
    (out / "learning.md").write_text(f"{results['command']}\n\n{markdown}\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
