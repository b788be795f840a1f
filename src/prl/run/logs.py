"""Run logs: a window of recent episodes, metrics.jsonl and TensorBoard."""

from __future__ import annotations

import json
import math
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Optional, Union

from prl.metrics import METRICS
from prl.run.folder import full_disk_is_config_error, write_atomically


class EpisodeWindow:
    """The most recent episodes' returns and lengths, for a smoothed 'mean episode return'.

    For a PettingZoo env an episode is one agent's, and `team_returns` holds the sums over each
    env's agents (`prl.envs.agents`)."""

    def __init__(self, size: int = 100):
        self.returns: deque = deque(maxlen=size)
        self.lengths: deque = deque(maxlen=size)
        self.team_returns: deque = deque(maxlen=size)
        self.total = 0

    def add(self, returns: list[float], lengths: list[int], team_returns: Optional[list[float]] = None) -> None:
        """Record newly finished episodes (and, for a PettingZoo env, its finished episodes' team returns)."""
        self.returns.extend(returns)
        self.lengths.extend(lengths)
        self.team_returns.extend(team_returns or [])
        self.total += len(returns)

    def return_mean(self) -> Optional[float]:
        """Mean return of the window, None before any episode has finished."""
        return sum(self.returns) / len(self.returns) if self.returns else None

    def team_return_mean(self) -> Optional[float]:
        """Mean team return of the window, None before any PettingZoo episode has finished."""
        return sum(self.team_returns) / len(self.team_returns) if self.team_returns else None

    def state_dict(self) -> dict:
        """The window's contents, for checkpoints."""
        return {
            "returns": list(self.returns),
            "lengths": list(self.lengths),
            "team_returns": list(self.team_returns),
            "total": self.total,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.returns.clear()
        self.lengths.clear()
        self.team_returns.clear()
        self.add(list(state["returns"]), list(state["lengths"]), list(state.get("team_returns", [])))
        self.total = int(state["total"])

    def length_mean(self) -> Optional[float]:
        """Mean length of the window, None before any episode has finished."""
        return sum(self.lengths) / len(self.lengths) if self.lengths else None


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsLog:
    """Writes one JSON object per update to `metrics.jsonl`, flushed at once so a crash loses nothing.

    A new run starts the file afresh. A resumed run passes `keep_updates`, the update count of
    its checkpoint: lines up to it are kept, later ones (written after that checkpoint by the
    run that stopped) are dropped, since the resumed run does those updates again. The kept
    lines replace the file atomically (`prl.run.folder.write_atomically`) before new ones are
    appended. `history` is the file to keep them from when it is another run folder's (a run
    continued in a new folder); that file is only read.
    """

    def __init__(
        self, path: Union[str, Path], keep_updates: Optional[int] = None, history: Optional[Union[str, Path]] = None
    ):
        self.path = Path(path)
        source = Path(history) if history is not None else self.path
        if keep_updates is None or not source.exists():
            self._file = open(self.path, "w", encoding="utf-8")
            return
        kept = []
        for line in source.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("update", 0) <= keep_updates:
                    kept.append(line + "\n")
            except json.JSONDecodeError:
                break  # a line cut short by a crash ends what can be kept
        # Never rewritten in place: a crash or a full disk now leaves the old history whole.
        write_atomically(self.path, lambda tmp: tmp.write_text("".join(kept), encoding="utf-8"))
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append one record (non-finite floats become null, so every line is valid JSON)."""
        with full_disk_is_config_error(self.path):
            self._file.write(json.dumps({key: _clean(value) for key, value in record.items()}) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def tensorboard_scalars(record: dict) -> list[tuple[str, float]]:
    """The (tag, value) pairs TensorBoard charts for one record: each metric with a group in
    `prl.metrics`, as group/name; missing or non-finite values are left out."""
    scalars = []
    for metric in METRICS:
        value = record.get(metric.name)
        if metric.group is not None and isinstance(value, (int, float)) and math.isfinite(value):
            scalars.append((f"{metric.group}/{metric.name}", value))
    return scalars


class TensorBoardLog:
    """The charted scalars of metrics.jsonl (`tensorboard_scalars`), as TensorBoard event files in the run folder, against env steps.

    A thread of its own imports TensorBoard and writes the events, so that the import (about a
    quarter of a second) and the writing overlap the run instead of delaying it. `close()`
    writes what is queued and closes the file; an error of the thread is raised by the next
    `write()` or by `close()`.
    """

    def __init__(self, folder: Union[str, Path]):
        self._records: queue.SimpleQueue = queue.SimpleQueue()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, args=(str(folder),), name="prl-tensorboard", daemon=True)
        self._thread.start()

    def _run(self, folder: str) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # imported here: only runs that log need it

            writer = SummaryWriter(log_dir=folder)
        except BaseException as error:
            self._error = error
            return
        try:
            while (record := self._records.get()) is not None:
                for tag, value in tensorboard_scalars(record):
                    writer.add_scalar(tag, value, record["env_steps"])
        except BaseException as error:
            self._error = error
        finally:
            writer.close()

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"prl could not write TensorBoard events: {type(error).__name__}: {error}") from error

    def write(self, record: dict) -> None:
        """Queue one update's scalars for the writer thread."""
        self._raise_error()
        self._records.put(dict(record))

    def close(self) -> None:
        """Write what is queued, close the event file and end the thread; safe to call twice."""
        if self._thread.is_alive():
            self._records.put(None)
            self._thread.join()
        self._raise_error()


def format_return(value: Optional[float], like: Optional[float] = None) -> str:
    """A return for people: one decimal from 10 up, three below (MiniGrid's 0.955 is not 1.0); "-" for None.

    `like` picks the precision from another value, so a std is printed as its mean is.
    """
    if value is None:
        return "-"
    scale = abs(value if like is None else like)
    return f"{value:.1f}" if scale >= 10 else f"{value:.3f}"
