"""Metrics: a window of recent episodes, and the run folder's JSON-lines and JSON files."""

from __future__ import annotations

import json
import math
from collections import deque
from pathlib import Path
from typing import Optional, Union

from prl.errors import ConfigError


class EpisodeWindow:
    """The most recent episodes' returns and lengths, for a smoothed 'mean episode return'."""

    def __init__(self, size: int = 100):
        self.returns: deque = deque(maxlen=size)
        self.lengths: deque = deque(maxlen=size)
        self.total = 0

    def add(self, returns: list[float], lengths: list[int]) -> None:
        """Record newly finished episodes."""
        self.returns.extend(returns)
        self.lengths.extend(lengths)
        self.total += len(returns)

    def return_mean(self) -> Optional[float]:
        """Mean return of the window, None before any episode has finished."""
        return sum(self.returns) / len(self.returns) if self.returns else None

    def length_mean(self) -> Optional[float]:
        """Mean length of the window, None before any episode has finished."""
        return sum(self.lengths) / len(self.lengths) if self.lengths else None


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json")
"""What a run folder holds; any of them present means the folder already holds a run."""


def check_run_folder(out: Optional[Union[str, Path]], overwrite: bool) -> None:
    """Refuse an out folder that already holds a run, unless overwriting was asked for."""
    if out is None or overwrite:
        return
    existing = [name for name in RUN_FILES if (Path(out) / name).exists()]
    if existing:
        raise ConfigError(
            f"the out folder {out} already holds a run ({', '.join(existing)}); "
            "choose another --out or pass --overwrite to replace it."
        )


class MetricsLog:
    """Writes one JSON object per update to `metrics.jsonl`, flushed at once so a crash loses nothing."""

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._file = open(self.path, "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        """Append one record (non-finite floats become null, so every line is valid JSON)."""
        self._file.write(json.dumps({key: _clean(value) for key, value in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def write_json(path: Union[str, Path], data: dict) -> None:
    """Write a JSON file via a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
