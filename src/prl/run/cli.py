"""The command line of scripts/train.py, generated from the Config dataclass tree.

Every leaf field becomes a flag (`envs_per_worker` -> `--envs-per-worker`) whose help is the
field's docstring. When `--env` names an env with tuned defaults (`prl.envs.presets`), those load
first; an options file (`--config FILE`, `prl.run.options_file`) overrides them, and explicit
flags override both.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import collections.abc
import dataclasses
import datetime
import inspect
import json
import os
import sys
import textwrap
import traceback
import typing
from typing import Any, Callable, NoReturn, Optional, Sequence

from prl.collection.processes import prestart, stop_forkserver
from prl.config import SECTIONS, Config, flat_fields, flatten_dict, from_flat
from prl.envs.factory import probe_env
from prl.envs.presets import PRESETS, tuned_config
from prl.errors import ConfigError, RunFailed, WorkerError
from prl.run.folder import check_run_folder
from prl.run.logs import format_return
from prl.run.options_file import read_options


def field_docs(cls: type) -> dict[str, str]:
    """The string literal written under each field of a dataclass, by field name."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    class_def = tree.body[0]
    assert isinstance(class_def, ast.ClassDef)  # the source of a class is its class statement
    body = class_def.body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _converter(hint: Any) -> tuple[Callable[[str], Any], dict]:
    """An argparse type function (and extra add_argument options) for a field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        convert, extra = _converter(inner)
        return (lambda text: None if text.lower() == "none" else convert(text)), extra
    if origin is typing.Union:  # EnvSource: only an id can come from the command line
        return str, {}
    if origin is tuple:
        return args[0], {"nargs": "+"}
    if origin in (dict, collections.abc.Mapping):
        return _json_object, {}
    return hint, {}


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error.msg}): {text}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per Config leaf field; unset flags are absent from the result."""
    parser = argparse.ArgumentParser(
        prog="train.py",
        description="Train PPO with many worker processes. Tuned defaults load for: " + ", ".join(PRESETS) + ".",
        argument_default=argparse.SUPPRESS,
    )
    classes: dict[Optional[str], type] = {None: Config} | SECTIONS
    docs = {section: field_docs(cls) for section, cls in classes.items()}
    hints = {section: typing.get_type_hints(cls) for section, cls in classes.items()}
    default_preset = PRESETS.get(str(Config.env), {})  # the default env is an id
    groups: dict[Optional[str], argparse._ActionsContainer] = {
        None: parser,
        **{name: parser.add_argument_group(f"{name} options") for name in SECTIONS},
    }
    for name, (section, field) in flat_fields().items():
        flag = "--" + name.replace("_", "-")
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        preset_note = f"; {Config.env}: {default_preset[name]}" if name in default_preset else ""
        help_text = f"{docs[section].get(name, '')} (default: {default}{preset_note})"
        hint = hints[section][name]
        if hint in (bool, Optional[bool]):  # an unset Optional[bool] is left to prl.envs.presets to decide
            groups[section].add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        convert, extra = _converter(hint)
        groups[section].add_argument(flag, type=convert, help=help_text, metavar=name.upper(), **extra)
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="Load options from a YAML or JSON file (flat names, or a run's config.json); explicit flags still win, "
        "and the file's options win over the env's tuned defaults and a resumed run's.",
    )
    parser.add_argument(
        "--no-preset",
        action="store_true",
        help="Start from prl's defaults even when --env has tuned defaults.",
    )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        help="Continue the run in DIR (or from a checkpoint file) to its step budget; flags given here override its "
        "options. With --out NEW_DIR the run continues in NEW_DIR and DIR stays as it was.",
    )
    parser.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="With --resume: act on the checkpoint's options that name code to import (a module:Env id, a "
        "module:function encoder) or a Ray cluster to join; without it those must be given as flags again.",
    )
    return parser


def default_out(env: str, seed: int) -> str:
    """The run folder of a run that names none: runs/ENV-seedN-DATE-TIME.MICROSECONDS-PID.

    The microseconds and the process id keep apart the runs of a sweep started together (with
    one-second names, runs started in the same second shared a folder).
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S.%f")
    return f"runs/{env.replace('/', '_')}-seed{seed}-{stamp}-{os.getpid()}"


def parse_args(argv: Optional[Sequence[str]] = None) -> tuple[Config, Optional[str]]:
    """Parse command-line flags into (Config, run folder to resume or None).

    A new run starts from the env's tuned defaults; a resumed run from the config stored in its
    checkpoint. An options file (`--config`) overrides either, and explicit flags override all.
    """
    options = vars(build_parser().parse_args(argv))
    config_file = options.pop("config", None)
    if config_file is not None:
        options = {**read_options(config_file), **options}
    resume = options.pop("resume", None)
    no_preset = options.pop("no_preset", False)
    trust = options.pop("trust_checkpoint", False)
    if resume is not None:
        from prl.run.checkpoint import checkpoint_path, load_checkpoint, require_trusted  # torch reads it

        stored = flatten_dict(load_checkpoint(resume)["config"])
        require_trusted(stored, options, trust, checkpoint_path(resume))
        return from_flat({**stored, "out": str(checkpoint_path(resume).parent), **options}), resume
    if trust:
        raise ConfigError("--trust-checkpoint applies to the checkpoint of --resume; pass it with --resume DIR.")
    env = options.pop("env", Config.env)
    if options.get("out") is None:
        options["out"] = default_out(env, options.get("seed", Config.seed))
    if no_preset:
        return from_flat({**options, "env": env}), None
    return tuned_config(env, **options), None


def parse_config(argv: Optional[Sequence[str]] = None) -> Config:
    """Parse command-line flags into a Config (see `parse_args`)."""
    return parse_args(argv)[0]


def exit_now(code: int) -> NoReturn:
    """End the command's process with `code`: run the exit handlers, then exit without the interpreter's teardown.

    The teardown frees every module and object one by one, torch's included, which takes about
    0.7 s on a 2-core machine, a seventh of a whole CartPole run, and nothing of prl's needs it:
    by the time `main` returns, the run folder's files are closed and the workers stopped. The
    forkserver is ended too (`prl.collection.processes.stop_forkserver`). Exit handlers
    (`atexit`: logging, multiprocessing, a coverage tool's) still run.
    """
    stop_forkserver()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run training from the command line; returns the process exit code (2 for a user error)."""
    config = None
    try:
        config, resume = parse_args(argv)
        if resume is None:
            check_run_folder(config.out, config.overwrite)
        else:
            from prl.run.training import resume_checkpoint

            resume_checkpoint(config, resume)  # another env or network shape fails here, before anything starts
        spec = probe_env(config)  # a bad env fails here, before any process starts
        prestart(config)  # the worker server imports torch while this process does
        from prl.run.training import train  # torch loads only once the options and env are known to be valid

        summary = train(config, spec, resume_from=resume)
    except ConfigError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2
    except WorkerError as error:
        print(f"train.py: a worker failed: {error}", file=sys.stderr)
        return 1
    except RunFailed as error:
        # Not a cause prl knows: the traceback of what failed, then the sentence that says what was kept.
        traceback.print_exception(error.__cause__ or error, file=sys.stderr)
        print(f"train.py: the run failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stopped:
        if str(stopped) and config is not None and config.out:  # a StopRequested: the checkpoint is saved
            print(
                f"train.py: stopped by {stopped}; continue with: python scripts/train.py --resume {config.out}",
                file=sys.stderr,
            )
        else:
            print("train.py: interrupted; workers stopped.", file=sys.stderr)
        return 130
    print(f"run folder: {config.out}")
    print(
        f"{summary['env_steps']:,} env steps in {summary['wall_s']:.1f} s "
        f"({summary['steps_per_s']:,.0f} steps/s while training)"
    )
    if "eval_return_mean" in summary:
        print(
            f"evaluation over {summary['eval_episodes']} episodes: "
            f"return {format_return(summary['eval_return_mean'])} "
            f"+- {format_return(summary['eval_return_std'], like=summary['eval_return_mean'])}"
            + (
                ""
                if "eval_team_return_mean" not in summary
                else " per agent, team return "
                f"{format_return(summary['eval_team_return_mean'])} "
                f"+- {format_return(summary['eval_team_return_std'], like=summary['eval_team_return_mean'])}"
            )
        )
    return 0
