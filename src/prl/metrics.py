"""Every metric prl logs per update: its name, meaning, unit and TensorBoard group, in one place.

The learner names its statistics from here, the run writes them to `metrics.jsonl`
(`prl.run.logs`), TensorBoard charts each under its group, `scripts/plot.py` reads them, and
README.md's table of them is `markdown_table()`. A record holds a metric only where it applies
(`eval_return_mean` on evaluation updates, the RND metrics with RND); a non-finite value is
written as null. This module imports nothing, so any script may read it.
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class Metric(NamedTuple):
    """One field of a `metrics.jsonl` record."""

    name: str
    meaning: str
    unit: str
    """What the number counts ("" for a plain number such as a loss)."""
    group: Optional[str]
    """The TensorBoard prefix it is charted under (charts, losses, perf), or None if not charted."""


METRICS: tuple[Metric, ...] = (
    Metric("update", "updates done so far, this one included", "updates", None),
    Metric(
        "env_steps",
        "env steps learned from so far (PettingZoo envs: agent-steps); the x axis of every chart",
        "steps",
        None,
    ),
    Metric(
        "steps_per_s", "env steps learned per second of training since the run (or resume) started", "steps/s", "perf"
    ),
    Metric(
        "episode_return_mean",
        "mean return of the last 100 finished training episodes (Atari: whole games, real score)",
        "return",
        "charts",
    ),
    Metric("episode_length_mean", "mean length of the same episodes", "steps", "charts"),
    Metric(
        "team_return_mean",
        "PettingZoo envs: mean over the last 100 finished env episodes of the sum of every agent's return "
        "(episode_return_mean is then per agent)",
        "return",
        "charts",
    ),
    Metric("episodes", "training episodes finished so far", "episodes", "charts"),
    Metric("policy_loss", "clipped surrogate loss, mean over the update's gradient steps", "", "losses"),
    Metric("value_loss", "critic loss (times vf_coef in the total), mean over the gradient steps", "", "losses"),
    Metric("entropy", "entropy of the action distribution, mean over the gradient steps", "nats", "losses"),
    Metric("approx_kl", "approximate KL divergence of the new policy from the one that acted", "nats", "losses"),
    Metric("clipfrac", "fraction of samples whose probability ratio was clipped", "fraction", "losses"),
    Metric("rnd_loss", "RND predictor loss (with --rnd)", "", "losses"),
    Metric("int_value_loss", "intrinsic critic loss (with --rnd)", "", "losses"),
    Metric(
        "skipped_update",
        "1 when the update's loss or gradient was not finite and its changes were discarded",
        "",
        "perf",
    ),
    Metric("intrinsic_reward", "RND's raw intrinsic reward, mean over the batch (with --rnd)", "", "charts"),
    Metric(
        "intrinsic_reward_scaled", "the same after scaling by its running standard deviation (with --rnd)", "", None
    ),
    Metric(
        "policy_lag",
        "updates between the oldest weights that acted in the batch and the update (sync: 0, overlap: 1)",
        "updates",
        "perf",
    ),
    Metric(
        "policy_lag_min", "updates between the newest weights that acted in the batch and the update", "updates", None
    ),
    Metric("policy_lag_mean", "the same, mean over the batch's steps", "updates", "perf"),
    Metric(
        "stale_fraction",
        "fraction of the batch's steps left out of the loss for a lag above max_policy_lag (with --max-policy-lag)",
        "fraction",
        "perf",
    ),
    Metric(
        "importance_ratio",
        "mean ratio of the learner's policy to the one that acted, over the batch's actions (with --correction "
        "clip or vtrace)",
        "",
        "losses",
    ),
    Metric(
        "explained_variance",
        "how much of the returns' variance the critic's values explain (1 is perfect)",
        "",
        "losses",
    ),
    Metric("lr", "learning rate of the update", "", "charts"),
    Metric("epochs", "epochs run (fewer when target_kl stopped the update early)", "epochs", "perf"),
    Metric("gradient_steps", "optimizer steps taken", "steps", None),
    Metric("learn_s", "time of the update", "s", "perf"),
    Metric("collect_s", "time in collect() for the batch", "s", "perf"),
    Metric("wait_s", "of collect_s, time spent waiting for workers", "s", "perf"),
    Metric("worker_restarts", "worker failures recovered from so far", "restarts", "perf"),
    Metric(
        "eval_return_mean",
        "mean deterministic evaluation return (evaluation updates only, --eval-every; PettingZoo envs: per agent)",
        "return",
        "charts",
    ),
    Metric("wall_s", "time since the command started", "s", None),
)
"""Every metric, in the order a record holds them."""

BY_NAME = {metric.name: metric for metric in METRICS}
"""Each metric by its name."""

LOSS_TERMS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
"""The PPO loss's logged terms, in the order the learner adds them up (`prl.learning.ppo.LossParts`)."""

RND_TERMS = ("rnd_loss", "int_value_loss")
"""RND's logged loss terms, in the learner's order."""


def unknown(names) -> list[str]:
    """The names among `names` that are no metric of this schema."""
    return [name for name in names if name not in BY_NAME]


def markdown_table() -> str:
    """The README's table of the metrics: name, unit and meaning, one row each."""
    rows = ["| metric | unit | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{metric.name}` | {metric.unit or '-'} | {metric.meaning} |" for metric in METRICS]
    return "\n".join(rows) + "\n"


assert not unknown(LOSS_TERMS + RND_TERMS), "every loss term is a metric"
