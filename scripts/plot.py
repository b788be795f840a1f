"""Plot learning curves of prl runs: `python scripts/plot.py RUN_DIR [RUN_DIR ...] [--out FILE.png] [--smooth N]`.

One PNG with two panels side by side: episode return against env steps and against wall time,
one line per run folder (as written by `scripts/train.py --out DIR`). Evaluations, periodic
ones in `metrics.jsonl` and the final one in `summary.json`, are markers of the run's colour.
The metrics' names come from prl's schema (`prl.metrics`, which imports nothing); torch is not imported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

from matplotlib import ticker
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure state
from matplotlib.lines import Line2D

from prl.metrics import BY_NAME

METRICS_FILE = "metrics.jsonl"
STEPS, WALL, RETURN, EVAL_RETURN = (
    BY_NAME[name].name for name in ("env_steps", "wall_s", "episode_return_mean", "eval_return_mean")
)
"""The metrics a learning curve is drawn from (a KeyError here means the schema renamed one)."""
DEFAULT_OUT_NAME = "learning_curves.png"
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


class RunFolderError(Exception):
    """A cause the user can fix (missing folder, not a run folder, corrupt file); the message says which."""


def _number(value) -> Optional[float]:
    """`value` as a float, or None when it is null, not a number or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def read_metrics(path: Path) -> list[dict]:
    """The records of a `metrics.jsonl` file, one per update; raises RunFolderError naming a bad line."""
    records = []
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RunFolderError(f"{path} line {line_number} is not valid JSON ({error.msg}).") from None
            for key in (STEPS, WALL):
                if not isinstance(record, dict) or _number(record.get(key)) is None:
                    raise RunFolderError(f"{path} line {line_number} has no numeric '{key}'.")
            records.append(record)
    if not records:
        raise RunFolderError(f"{path} holds no updates; the run stopped before its first update.")
    return records


def cumulative_wall(wall_s: Sequence[float]) -> list[float]:
    """Wall times made cumulative across resumes: where the clock restarts, the last segment's end is added."""
    offset, previous, result = 0.0, None, []
    for seconds in wall_s:
        if previous is not None and seconds < previous:
            offset += previous
        result.append(offset + seconds)
        previous = seconds
    return result


def _read_json(path: Path) -> dict:
    """A JSON file's object, {} when the file is absent; raises RunFolderError when it is corrupt."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from None
    return data if isinstance(data, dict) else {}


def _check_run_folder(folder: Path) -> None:
    """Raise RunFolderError unless `folder` exists and holds a metrics file."""
    if not folder.exists():
        raise RunFolderError(f"{folder} does not exist.")
    if not folder.is_dir():
        raise RunFolderError(f"{folder} is not a folder; pass the folder given to --out.")
    if not (folder / METRICS_FILE).is_file():
        raise RunFolderError(f"{folder} is not a prl run folder (no {METRICS_FILE}); pass the folder given to --out.")


def _points(records: list[dict], steps: list[float], wall: list[float], key: str) -> list[tuple]:
    """(env_steps, wall_s, value) of the records whose `key` holds a number; null ones are skipped."""
    return [(s, w, _number(r.get(key))) for s, w, r in zip(steps, wall, records) if _number(r.get(key)) is not None]


def _columns(points: list[tuple]) -> tuple[list, list, list]:
    """Points as three lists: env steps, wall seconds, returns."""
    return tuple(list(column) for column in zip(*points)) if points else ([], [], [])


def load_run(path) -> dict:
    """A run folder's curves: name, env, and lists of env steps, cumulative wall seconds and returns.

    `env_steps`, `wall_s` and `episode_return` hold the updates whose return is known (null
    returns are skipped); `eval_env_steps`, `eval_wall_s` and `eval_return` hold the evaluation
    points, with the end-of-run one from `summary.json` placed at the last update.
    """
    folder = Path(path)
    _check_run_folder(folder)
    records = read_metrics(folder / METRICS_FILE)
    summary = _read_json(folder / "summary.json")
    env = _read_json(folder / "config.json").get("env") or summary.get("env")
    steps = [float(record[STEPS]) for record in records]
    wall = cumulative_wall([float(record[WALL]) for record in records])
    evaluations = _points(records, steps, wall, EVAL_RETURN)
    final_return = _number(summary.get(EVAL_RETURN))
    if final_return is not None and not (evaluations and evaluations[-1][0] == steps[-1]):
        evaluations.append((steps[-1], wall[-1], final_return))
    run = {"name": folder.resolve().name, "env": env if isinstance(env, str) else None}
    run["env_steps"], run["wall_s"], run["episode_return"] = _columns(_points(records, steps, wall, RETURN))
    run["eval_env_steps"], run["eval_wall_s"], run["eval_return"] = _columns(evaluations)
    return run


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing mean over `window` points; the first points average what came before them."""
    result, total = [], 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        result.append(total / min(index + 1, window))
    return result


def run_labels(runs: Sequence[dict]) -> list[str]:
    """Legend labels: each run's folder name, with its env when the runs do not all share one."""
    if len({run["env"] for run in runs}) > 1:
        return [f"{run['name']} ({run['env'] or 'unknown env'})" for run in runs]
    return [run["name"] for run in runs]


def _draw_panel(axes, runs: Sequence[dict], x_key: str, smooth: int) -> None:
    """One panel: each run's smoothed return against `x_key`, its evaluations as markers."""
    for index, (run, label) in enumerate(zip(runs, run_labels(runs))):
        color = COLORS[index % len(COLORS)]
        axes.plot(run[x_key], moving_average(run["episode_return"], smooth), color=color, label=label)
        axes.plot(run[f"eval_{x_key}"], run["eval_return"], "o", color=color, markeredgecolor="black", markersize=6)
    axes.grid(alpha=0.3)


def build_figure(runs: Sequence[dict], smooth: int = 1) -> Figure:
    """The two-panel figure: return against env steps (left) and against wall time (right)."""
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    steps_axes, wall_axes = figure.subplots(1, 2, sharey=True)
    _draw_panel(steps_axes, runs, "env_steps", smooth)
    _draw_panel(wall_axes, runs, "wall_s", smooth)
    steps_axes.set_ylabel("episode return")
    steps_axes.set_xlabel("env steps")
    steps_axes.xaxis.set_major_formatter(ticker.EngFormatter())
    wall_axes.set_xlabel(f"wall time ({BY_NAME[WALL].unit})")
    smoothing = f", moving average over {smooth} updates" if smooth > 1 else ""
    figure.suptitle(f"Lines: training return, mean of the last 100 episodes{smoothing}", fontsize="medium")
    steps_axes.set_title("Return vs env steps", fontsize="medium")
    wall_axes.set_title("Return vs wall time", fontsize="medium")
    handles, labels = steps_axes.get_legend_handles_labels()
    if any(run["eval_return"] for run in runs):
        handles.append(Line2D([], [], marker="o", linestyle="", color="white", markeredgecolor="black"))
        labels.append("evaluation")
    wall_axes.legend(handles, labels, loc="best")
    return figure


def plot_runs(runs: Sequence[dict], out, smooth: int = 1) -> Path:
    """Draw the runs' learning curves into the image file `out` and return its path."""
    out = Path(out)
    if not out.parent.is_dir():
        raise RunFolderError(f"cannot write {out}: the folder {out.parent} does not exist.")
    build_figure(runs, smooth).savefig(out, dpi=120)
    return out


def _positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="plot.py", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders written by train.py --out")
    parser.add_argument("--out", help=f"image file to write (default: {DEFAULT_OUT_NAME} in the first run folder)")
    parser.add_argument(
        "--smooth", type=_positive_int, default=1, help="moving average over N updates (default 1: none)"
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Plot the runs named on the command line; returns the exit code (2 for a cause the user can fix)."""
    args = parse_args(argv)
    try:
        runs = [load_run(folder) for folder in args.runs]
        out = plot_runs(runs, args.out or Path(args.runs[0]) / DEFAULT_OUT_NAME, args.smooth)
    except RunFolderError as error:
        print(f"plot.py: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
