"""`train(config)`: the one place where env, learner, pool, logs, checkpoints and evaluation meet."""

from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import torch
from tqdm import tqdm

from prl.collection.backends import open_collector
from prl.config import Config, flatten_dict, to_flat
from prl.envs.factory import EnvFactory, probe_env
from prl.envs.spec import EnvSpec
from prl.errors import ConfigError, RunFailed, WorkerError
from prl.learning.learner import Learner
from prl.run.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT,
    checkpoint_path,
    load_checkpoint,
    previous_path,
    save_checkpoint,
)
from prl.run.evaluation import evaluate
from prl.run.folder import check_run_folder, clear_run_folder, locked_run_folder, write_json
from prl.run.logs import EpisodeWindow, MetricsLog, TensorBoardLog, format_return

RESUMABLE_CHANGES = {
    "steps",
    "progress",
    "save_every",
    "eval_every",
    "eval_episodes",
    "overwrite",
    "out",
    # What the errors that stop a run tell the user to change before resuming it:
    "worker_timeout",
    "max_worker_restarts",
    "restart_window_s",
    "nan_policy",
    "ray_address",
    "ray_worker_cpus",
    "device",
}
"""Options a resumed run may change; anything else would make it a different run."""


class StopRequested(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the message says when."""


class Run:
    """The state of one training run outside the learner: its folder, log, episode window and best evaluation."""

    def __init__(self, config: Config, learner: Learner, resume: Optional[dict], history: Optional[Path] = None):
        """`resume` is the payload of the checkpoint to continue from; `history` the metrics.jsonl of the run
        folder it came from when that is not `config.out` (a branch, see `is_branch`)."""
        self.config = config
        self.learner = learner
        self.window = EpisodeWindow()
        self.best_eval_return = -math.inf
        self.out = Path(config.out) if config.out else None
        self.log: Optional[MetricsLog] = None
        self.tensorboard: Optional[TensorBoardLog] = None
        if resume is not None:
            learner.load_state_dict(resume["learner"])
            self.window.load_state_dict(resume["window"])
            # A better evaluation may have come after the checkpoint resumed from: its policy is in
            # checkpoint_best.pt, which a worse one must not replace.
            # A branch keeps its own best: the source's checkpoint_best.pt stays in the source folder.
            if history is None:
                self.best_eval_return = max(float(resume["best_eval_return"]), self._saved_best_return())
            torch.set_rng_state(resume["torch_rng"])
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", config.to_dict())
            self.log = MetricsLog(
                self.out / "metrics.jsonl", keep_updates=learner.updates if resume else None, history=history
            )
            if config.tensorboard:
                self.tensorboard = TensorBoardLog(self.out)

    def _saved_best_return(self) -> float:
        """The evaluation return that the run folder's checkpoint_best.pt was kept for (-inf without one)."""
        path = self.out / BEST_CHECKPOINT if self.out is not None else None
        if path is None or not path.exists():
            return -math.inf
        try:
            return float(load_checkpoint(path)["best_eval_return"])
        except (ConfigError, KeyError, TypeError, ValueError) as error:
            warnings.warn(f"prl: {path} cannot be read ({error}); a better evaluation will replace it.", stacklevel=2)
            return -math.inf

    def payload(self) -> dict:
        """Everything a checkpoint holds (see `prl.run.checkpoint`)."""
        return {
            "learner": self.learner.state_dict(),
            "window": self.window.state_dict(),
            "best_eval_return": self.best_eval_return,
            "torch_rng": torch.get_rng_state(),
            "config": self.config.to_dict(),
        }

    def save(self, name: str = CHECKPOINT) -> None:
        """Write a checkpoint into the run folder (nothing without one)."""
        if self.out is not None:
            save_checkpoint(self.out / name, self.payload())

    def saved_after(self, error: Exception, first_updates: int) -> Exception:
        """Save the run after `error` stopped it, and return the error to raise: its message names the resume command.

        The learner is whole whenever an error can reach here (an update that fails undoes
        itself), so the run is saved if it has learned anything since it started; a save that
        fails too (a full disk) leaves the last good checkpoint. A WorkerError or ConfigError
        keeps its type; any other error becomes a `RunFailed` whose cause it is.
        """
        if self.out is None:
            return error
        note = ""
        if self.learner.updates > first_updates:
            try:
                self.save()
                note = f"The run is saved at {self.learner.env_steps:,} env steps"
            except Exception as save_error:
                again = "" if str(save_error) == str(error) else f" (saving it again failed: {save_error})"
                note = f"The run's last good checkpoint is kept{again}"
        elif (self.out / CHECKPOINT).exists():
            note = "The run's last checkpoint is kept"
        if not note:
            return error
        resume = f"{note}; once the cause is fixed, continue with: python scripts/train.py --resume {self.out}"
        if isinstance(error, (WorkerError, ConfigError)):
            return type(error)(f"{error} {resume}")
        return RunFailed(f"{type(error).__name__}: {error}. {resume}")

    def evaluate(self) -> dict:
        """Deterministic evaluation of the current policy; keeps the best one as checkpoint_best.pt."""
        config = self.config
        result = evaluate(
            self.learner.policy, EnvFactory(config.env, config.env_kwargs), config.eval_episodes, config.seed
        )
        if result["return_mean"] > self.best_eval_return:
            self.best_eval_return = result["return_mean"]
            self.save(BEST_CHECKPOINT)
        return result

    def write(self, record: dict) -> None:
        """Log one update's record to metrics.jsonl and TensorBoard."""
        for log in (self.log, self.tensorboard):
            if log is not None:
                log.write(record)

    def close(self, quiet: bool = False) -> None:
        """Close the metrics log and the TensorBoard writer; safe to call twice.

        `quiet` drops an error in closing them (on a full disk, the flush of a line that failed to
        write fails again), for a run that is already stopping with the error that says why.
        """
        for log in (self.log, self.tensorboard):
            if log is not None:
                try:
                    log.close()
                except Exception:
                    if not quiet:
                        raise


def is_branch(config: Config, resume_from: str) -> bool:
    """Whether resuming from `resume_from` writes into another folder than the one that holds the checkpoint.

    A branch starts a new run folder (refused if it holds a run, unless `overwrite`) from the
    checkpoint's state and its metrics up to it, and leaves the source folder as it was. Resuming
    into the checkpoint's own folder continues that run, so only its latest checkpoint may be
    resumed there: any other (checkpoint_best.pt, a copy) would rewind it and is refused.
    """
    file = checkpoint_path(resume_from)
    if config.out is None or Path(config.out).resolve() != file.parent.resolve():
        return config.out is not None
    if file.name not in (CHECKPOINT, previous_path(CHECKPOINT).name):
        raise ConfigError(
            f"resuming from {file} into its own run folder would rewind the run that wrote it, losing its later "
            "checkpoints and metrics; continue from it in a new folder with --out NEW_DIR."
        )
    return False


def resume_checkpoint(config: Config, resume_from: str) -> dict:
    """Load the checkpoint to resume from and check that `config` continues the same run into a folder it may write."""
    if is_branch(config, resume_from):
        check_run_folder(config.out, config.overwrite)
    payload = load_checkpoint(resume_from)
    saved = flatten_dict(payload["config"])
    current = to_flat(config)
    for name, value in saved.items():
        if name in RESUMABLE_CHANGES or name not in current:
            continue
        if name == "env" and not isinstance(current["env"], str):
            continue  # a callable env is stored by name only
        if isinstance(value, list):
            value = tuple(value)
        if current[name] != value and not (isinstance(current[name], dict) and dict(current[name]) == value):
            raise ConfigError(
                f"the checkpoint in {resume_from} was made with {name}={value!r}, not {current[name]!r}; "
                "resume with the same options (only steps, the logging options, and the device, timeout, restart, "
                "nan-policy and Ray placement options may change)."
            )
    return payload


def train(config: Config, spec: Optional[EnvSpec] = None, resume_from: Optional[str] = None) -> dict:
    """Train PPO as `config` says and return the run summary (see `run_training`)."""
    return run_training(config, spec, resume_from)[0]


def run_training(
    config: Config,
    spec: Optional[EnvSpec] = None,
    resume_from: Optional[str] = None,
    initial_policy: Optional[dict] = None,
) -> tuple[dict, Learner]:
    """Train PPO as `config` says; return the run summary and the trained learner.

    `spec` is the env's description when the caller has already probed it (`prl.envs.factory.probe_env`).
    `resume_from` names a run folder or checkpoint to continue from: the learner, optimizer,
    statistics, counters and RNG states are restored and training goes on to `config.steps`.
    `initial_policy` is a policy state dict to start from instead of a fresh initialization.

    With `config.out` set, the run folder receives `config.json`, `metrics.jsonl` (one line per
    update), `checkpoint.pt` (every `save_every` updates and at the end), `checkpoint_best.pt`
    (with `eval_every`) and `summary.json`. The summary holds the env, env steps, steps/s, the
    time split (`startup_s` before the first update, `train_s`, `eval_s` of the final
    evaluation, `wall_s` in all, and `started_at`, the Unix time this call began) and, unless
    `eval_episodes` is 0, the final deterministic evaluation. One run at a time writes into a
    run folder (`prl.run.folder.locked_run_folder`); a second one is refused in one sentence.
    """
    with locked_run_folder(config.out):
        return _run_training(config, spec, resume_from, initial_policy)


def _run_training(
    config: Config, spec: Optional[EnvSpec], resume_from: Optional[str], initial_policy: Optional[dict]
) -> tuple[dict, Learner]:
    """`run_training`'s body, inside the run folder's lock."""
    started, started_at = time.perf_counter(), time.time()
    resume = resume_checkpoint(config, resume_from) if resume_from else None
    history = None
    if resume_from is not None and is_branch(config, resume_from):
        history = checkpoint_path(resume_from).parent / "metrics.jsonl"
    if resume is None or history is not None:
        check_run_folder(config.out, config.overwrite)
        if config.out and config.overwrite:
            clear_run_folder(config.out)
    spec = spec if spec is not None else probe_env(config)
    learner = Learner(config, spec)
    if initial_policy is not None:
        learner.policy.load_state_dict(initial_policy)
    run = Run(config, learner, resume, history)
    first_steps, first_updates = learner.env_steps, learner.updates
    lags: list[float] = []
    discard = False
    bar = tqdm(
        total=config.steps,
        initial=min(first_steps, config.steps),
        unit="step",
        disable=not config.progress,
        dynamic_ncols=True,
        desc=config.env_name,
    )
    try:
        with StopRequests() as stop, open_collector(config, learner.policy, seed_stream=learner.updates) as pool:
            train_started = time.perf_counter()
            while learner.env_steps < config.steps:
                collect_start = time.perf_counter()
                batch = stop.unless_requested(pool.collect, learner.device)
                if batch is None:  # a stop came while waiting for workers: the last update is whole
                    run.save()
                    raise StopRequested(f"{stop.requested} at {learner.env_steps:,} env steps")
                collect_s = time.perf_counter() - collect_start
                stats = learner.update(batch)
                lags.append(stats["policy_lag_mean"])
                run.window.add(*batch.finished_episodes(), batch.finished_team_returns())
                record = {
                    "update": learner.updates,
                    "env_steps": learner.env_steps,
                    "steps_per_s": (learner.env_steps - first_steps) / (time.perf_counter() - train_started),
                    "episode_return_mean": run.window.return_mean(),
                    "episode_length_mean": run.window.length_mean(),
                    **({"team_return_mean": run.window.team_return_mean()} if spec.agents else {}),
                    "episodes": run.window.total,
                    **stats,
                    "collect_s": collect_s,
                    "wait_s": pool.last_wait_s,
                    "worker_restarts": pool.restarts,
                }
                if config.eval_every and learner.updates % config.eval_every == 0:
                    record["eval_return_mean"] = run.evaluate()["return_mean"]
                record["wall_s"] = time.perf_counter() - started
                run.write(record)  # before anything else can fail, so a saved run's metrics hold its last update
                pool.publish(learner.policy)
                if config.save_every and learner.updates % config.save_every == 0:
                    run.save()
                bar.update(min(learner.env_steps, config.steps) - bar.n)
                shown = f"return {format_return(record['episode_return_mean'])}"
                if spec.agents:  # an agent's own return, then its env's team's
                    shown = f"agent {shown}, team {format_return(record['team_return_mean'])}"
                bar.set_postfix_str(f"{record['steps_per_s']:,.0f} steps/s, {shown}")
                if stop.requested:
                    run.save()  # between updates, so the saved state is whole
                    raise StopRequested(f"{stop.requested} at {learner.env_steps:,} env steps")
        train_s = time.perf_counter() - train_started
        run.save()
    except StopRequested:
        raise
    except Exception as error:  # after the workers have stopped
        # A run that fails before it learns anything leaves no half-made run folder behind.
        discard = learner.updates == first_updates and (resume is None or history is not None)
        run.close(quiet=True)
        raise run.saved_after(error, first_updates) from error
    finally:
        bar.close()
        run.close()
        if discard and config.out:
            clear_run_folder(config.out)
    summary = {
        "env": config.env_name,
        "env_steps": learner.env_steps,
        "updates": learner.updates,
        "train_s": train_s,
        "steps_per_s": (learner.env_steps - first_steps) / train_s,
        "episode_return_mean": run.window.return_mean(),
        "policy_lag_mean": sum(lags) / max(1, len(lags)),
    }
    summary["startup_s"] = train_started - started
    if config.eval_episodes > 0:
        eval_started = time.perf_counter()
        try:
            result = run.evaluate()
        except Exception as error:
            raise run.saved_after(error, learner.updates) from error  # the checkpoint is written
        summary["eval_s"] = time.perf_counter() - eval_started
        summary.update(
            eval_return_mean=result["return_mean"],
            eval_return_std=result["return_std"],
            eval_length_mean=result["length_mean"],
            eval_episodes=config.eval_episodes,
        )
        if "team_return_mean" in result:
            summary.update(
                eval_team_return_mean=result["team_return_mean"], eval_team_return_std=result["team_return_std"]
            )
    summary["wall_s"] = time.perf_counter() - started
    summary["started_at"] = started_at
    if run.out is not None:
        write_json(run.out / "summary.json", summary)
    return summary, learner


T = TypeVar("T")


class _WaitAbandoned(BaseException):
    """Raised by `StopRequests`'s signal handler into a wait that a stop request abandons (a BaseException, as
    KeyboardInterrupt is, so that no `except Exception` on the way turns it into another error)."""


class StopRequests:
    """Turns the first Ctrl-C, SIGTERM or SIGHUP into a request to stop between updates; a second Ctrl-C stops at once.

    SIGHUP comes when the terminal a run was started from closes.

    Use as a context manager around a training loop and check `requested` after each update.
    Outside the main thread (where signals cannot be handled) it does nothing.
    """

    def __init__(self):
        self.requested: Optional[str] = None
        self._previous: dict = {}
        self._abandon_wait = False

    def _handle(self, signum, frame) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if self._abandon_wait:
            raise _WaitAbandoned

    def unless_requested(self, wait: Callable[..., T], *args: Any) -> Optional[T]:
        """`wait(*args)`, or None if a stop is requested while it runs: the wait is abandoned at once.

        For waits that change no state worth keeping, such as collecting rollouts (the pool
        closes itself when its collect is interrupted), so that a run whose workers are slow or
        stuck stops on the first Ctrl-C instead of after the wait.
        """
        self._abandon_wait = True
        try:
            return wait(*args)
        except _WaitAbandoned:
            return None
        finally:
            self._abandon_wait = False

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
