"""Options files: every `Config` option read from, or written to, a YAML or JSON file.

`train.py --config FILE` loads one (explicit flags still win), `tune.py` writes its best trial
as one, and a run folder's `config.json` is one too, so `--config runs/X/config.json` starts a
run with another run's options. A file holds a mapping of option names to values, either flat
(`lr: 0.0003`) or in `Config.to_dict()`'s sections (`ppo: {lr: 0.0003}`). Each value is checked
against its field's type here, so that a typo or a wrong type ends in one sentence naming the
file, the key and the fix, before anything starts.
"""

from __future__ import annotations

import collections.abc
import contextlib
import json
import typing
from pathlib import Path
from typing import Any, Mapping

from prl.config import SECTIONS, Config, closest_option, flat_fields, flatten_dict
from prl.errors import ConfigError

SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}
"""The file name endings an options file may have, and the format each means."""


def option_types() -> dict[str, Any]:
    """Every leaf option's type hint, by option name."""
    classes: dict[str | None, type] = {None: Config} | SECTIONS
    hints = {section: typing.get_type_hints(cls) for section, cls in classes.items()}
    return {name: hints[section][name] for name, (section, _) in flat_fields().items()}


def _format(path: Path) -> str:
    try:
        return SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ConfigError(
            f"options file {path} must end in .yaml, .yml or .json, so that prl knows how to read it."
        ) from None


def _coerce(value: Any, hint: Any) -> Any:
    """`value` as the type `hint` names, or ValueError. Strings that spell a number are read as one
    (YAML reads `3e-4` as a string), and lists become tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value is None:
            return None
        return _coerce(value, next(arg for arg in args if arg is not type(None)))
    if origin is typing.Union:  # an env: an id here (a callable cannot be written in a file)
        if isinstance(value, str):
            return value
        raise ValueError("a string")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError("a list")
        return tuple(_coerce(item, args[0]) for item in value)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, Mapping):
            raise ValueError("a mapping")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError("true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ValueError("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return int(value.replace("_", ""))
        raise ValueError("an integer")
    if hint is float:
        if isinstance(value, bool):
            raise ValueError("a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)  # Config refuses a value that is not finite, in one sentence
        raise ValueError("a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError("a string")
    return value


def check_options(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Flat options from `values` (flat, or in `Config.to_dict()`'s sections), each of its field's type.

    Raises ConfigError naming `source`, the key and the closest option name for an unknown key,
    and the expected type for a value of the wrong one.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{source} must hold a mapping of option names to values, not a {type(values).__name__}.")
    for section in SECTIONS:
        if section in values and not isinstance(values[section], Mapping):
            raise ConfigError(f"{source}: section {section!r} must be a mapping of option names to values.")
    flat = flatten_dict(values)
    types = option_types()
    checked = {}
    for name, value in flat.items():
        if name not in types:
            raise ConfigError(
                f"{source}: unknown option {name!r}; did you mean {closest_option(name)!r}? "
                "See train.py --help for the list."
            )
        try:
            checked[name] = _coerce(value, types[name])
        except ValueError as error:
            raise ConfigError(
                f"{source}: option {name!r} must be {error}, got {value!r}; fix the value in the file."
            ) from None
    return checked


def read_options(path: str | Path) -> dict[str, Any]:
    """The options in the YAML or JSON file at `path`, flat and checked (see `check_options`)."""
    path = Path(path)
    kind = _format(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read options file {path} ({error.strerror}); check the path.") from None
    try:
        if kind == "json":
            values = json.loads(text) if text.strip() else {}
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except (json.JSONDecodeError, ValueError) as error:
        raise ConfigError(f"options file {path} is not valid JSON ({error}); fix the file.") from None
    except Exception as error:  # yaml.YAMLError, without importing yaml for a JSON file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"options file {path} is not valid YAML ({first}); fix the file.") from None
    return check_options(values, f"options file {path}")


def write_options(path: str | Path, options: Mapping[str, Any]) -> Path:
    """Write flat `options` to `path` as YAML or JSON (by its ending), checked first; returns the path."""
    path = Path(path)
    kind = _format(path)
    values = {name: list(value) if isinstance(value, tuple) else value for name, value in options.items()}
    check_options(values, f"options for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        path.write_text(json.dumps(values, indent=2) + "\n")
    else:
        import yaml

        path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path
