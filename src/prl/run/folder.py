"""The run folder: which files mark a run, refusing or clearing an old one, and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from prl.errors import ConfigError

RUN_FILES = ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json")
"""What a run folder holds; any of them present means the folder already holds a run."""


REPLACED_FILES = RUN_FILES + ("checkpoint_best.pt", "checkpoint_previous.pt", "checkpoint_best_previous.pt")
"""What a new run in the same folder replaces: an old best checkpoint would otherwise pose as the new run's."""

TENSORBOARD_FILES = "events.out.tfevents.*"
"""TensorBoard event files; an old run's would show as a second curve beside the new one."""


def clear_run_folder(out: Union[str, Path]) -> None:
    """Delete the files a previous run wrote into `out` (only those prl writes; anything else stays)."""
    folder = Path(out)
    for path in [folder / name for name in REPLACED_FILES] + sorted(folder.glob(TENSORBOARD_FILES)):
        path.unlink(missing_ok=True)


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


FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
"""The errors a write gets when the disk (or the user's quota) has no room left."""


@contextlib.contextmanager
def full_disk_is_config_error(path: Union[str, Path]) -> Iterator[None]:
    """Turn a write's "no space left" OSError inside the block into one ConfigError sentence naming `path`."""
    try:
        yield
    except OSError as error:
        if error.errno not in FULL_DISK:
            raise
        raise ConfigError(
            f"the disk holding {Path(path).parent} is full ({error.strerror}) while writing {Path(path).name}; "
            "free some space on it."
        ) from None


def write_atomically(
    path: Union[str, Path], write: Callable[[Path], object], keep_previous: Optional[Path] = None
) -> None:
    """Have `write` fill a temporary file beside `path`, fsync it, and rename it over `path`.

    The temporary file's name is unique (two writers of one path never share it), and it is
    removed if anything fails before the rename, which leaves the previous file intact. The
    folder is fsynced after the rename, so the new name survives a power cut too. Only a
    SIGKILL between the two can leave a `.tmp` file behind. A full disk is a ConfigError
    (`full_disk_is_config_error`). With `keep_previous`, the file
    being replaced stays readable under that name (a hard link, or a copy where the file system
    has none), so `path` itself is never missing.
    """
    path = Path(path)
    with full_disk_is_config_error(path):
        _write_atomically(path, write, keep_previous)


def _write_atomically(path: Path, write: Callable[[Path], object], keep_previous: Optional[Path]) -> None:
    """`write_atomically`'s body."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        if keep_previous is not None and path.exists():
            keep_previous.unlink(missing_ok=True)
            try:
                os.link(path, keep_previous)
            except OSError:
                shutil.copyfile(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_json(path: Union[str, Path], data: dict) -> None:
    """Write a JSON file atomically (see `write_atomically`)."""
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


@contextlib.contextmanager
def locked_run_folder(out: Optional[Union[str, Path]]) -> Iterator[None]:
    """Hold an exclusive lock on the run folder `out` (made if missing) for the block; nothing without one.

    The lock is `flock` on the folder itself, so no lock file is left in it, and the system drops
    it when the process ends, however it ends: a killed run leaves no stale lock. A second run
    (or `--resume`) of the same folder is refused in one sentence while the first one holds it.
    A folder this made and left empty (the run failed before writing) is removed again.
    """
    if out is None:
        yield
        return
    folder = Path(out)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"the run folder {folder} is in use by another run; wait for it to end, or choose another --out."
            ) from None
        yield
    finally:
        os.close(handle)
        if made and not any(folder.iterdir()):
            folder.rmdir()
