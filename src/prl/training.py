"""`train(config)`: the one place where env, learner, pool, logs, checkpoint and evaluation meet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from prl.checkpoint import save_checkpoint
from prl.config import Config
from prl.envs import EnvFactory, EnvSpec, probe_env
from prl.evaluate import evaluate
from prl.learner import Learner
from prl.metrics import EpisodeWindow, MetricsLog, check_run_folder, write_json
from prl.pool import ActorPool


def _format_return(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def train(config: Config, spec: Optional[EnvSpec] = None) -> dict:
    """Train PPO as `config` says and return the run summary.

    `spec` is the env's description when the caller has already probed it (`prl.envs.probe_env`).

    With `config.out` set, the run folder receives `config.json`, `metrics.jsonl` (one line per
    update), `checkpoint.pt` and `summary.json`. The summary holds the env, env steps, wall
    time, steps/s and, unless `eval_episodes` is 0, the deterministic evaluation's results.
    """
    started = time.perf_counter()
    check_run_folder(config.out, config.overwrite)
    spec = spec if spec is not None else probe_env(config)
    learner = Learner(config, spec)
    out = Path(config.out) if config.out else None
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
        log = MetricsLog(out / "metrics.jsonl")
    window = EpisodeWindow()
    bar = tqdm(total=config.steps, unit="step", disable=not config.progress, dynamic_ncols=True, desc=config.env_name)
    try:
        with ActorPool(config, learner.policy) as pool:
            train_started = time.perf_counter()
            while learner.env_steps < config.steps:
                collect_start = time.perf_counter()
                batch = pool.collect(learner.device)
                collect_s = time.perf_counter() - collect_start
                stats = learner.update(batch)
                pool.publish(learner.policy)
                window.add(*batch.finished_episodes())
                elapsed = time.perf_counter() - train_started
                record = {
                    "update": learner.updates,
                    "env_steps": learner.env_steps,
                    "steps_per_s": learner.env_steps / elapsed,
                    "episode_return_mean": window.return_mean(),
                    "episode_length_mean": window.length_mean(),
                    "episodes": window.total,
                    **stats,
                    "collect_s": collect_s,
                    "wait_s": pool.last_wait_s,
                    "wall_s": time.perf_counter() - started,
                }
                if log is not None:
                    log.write(record)
                bar.update(min(learner.env_steps, config.steps) - bar.n)
                bar.set_postfix_str(
                    f"{record['steps_per_s']:,.0f} steps/s, return {_format_return(record['episode_return_mean'])}"
                )
    finally:
        bar.close()
        if log is not None:
            log.close()
    train_s = time.perf_counter() - train_started
    summary = {
        "env": config.env_name,
        "env_steps": learner.env_steps,
        "updates": learner.updates,
        "train_s": train_s,
        "steps_per_s": learner.env_steps / train_s,
        "episode_return_mean": window.return_mean(),
    }
    if out is not None:
        save_checkpoint(out / "checkpoint.pt", learner.state_dict(), config)
    if config.eval_episodes > 0:
        result = evaluate(learner.policy, EnvFactory(config.env, config.env_kwargs), config.eval_episodes, config.seed)
        summary.update(
            eval_return_mean=result["return_mean"],
            eval_return_std=result["return_std"],
            eval_length_mean=result["length_mean"],
            eval_episodes=config.eval_episodes,
        )
    summary["wall_s"] = time.perf_counter() - started
    if out is not None:
        write_json(out / "summary.json", summary)
    return summary
