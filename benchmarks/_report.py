"""The throughput benchmark's output: tables on stdout and the scaling plot (see throughput.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from _plan import Plan

PHASES = ("import_s", "startup_s", "train_s", "eval_s", "exit_s")
"""A whole train.py process, in order: Python, imports, options and the env probe until `train()`
starts; `train()`'s start-up (learner, workers) until the first update; training; the final
evaluation; and the rest (writing the summary, closing, the interpreter's exit)."""


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def steps_per_s_of(record: Optional[dict]) -> Optional[float]:
    return None if record is None else record.get("steps_per_s")


def plain_runs(records: list[dict]) -> list[dict]:
    """End-to-end runs in the default synchronous mode with the env's tuned defaults (the sweep)."""
    return [r for r in records if not r.get("overlap") and not r.get("sb3_settings")]


def best_floor(results: dict, envs: int) -> float:
    """The fastest one-process collection measured with `envs` envs, whichever actor it used."""
    return max(r["steps_per_s"] for r in results["collection_floor"] if r["envs"] == envs and "steps_per_s" in r)


def _number(value: Optional[float], digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_table(title: str, header: tuple, rows: list) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    for index, row in enumerate([header, *rows]):
        print(
            "  ".join(
                str(cell).ljust(width) if i < 2 else str(cell).rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths))
            ).rstrip()
        )
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _row(figure: str, setting: str, record: dict, note: str = "") -> tuple:
    if "skipped" in record:
        return figure, setting, "-", "skipped: " + record["skipped"][:60]
    return figure, setting, _number(record["steps_per_s"]), note


def _scaling(record: dict, single: Optional[float]) -> str:
    # below 1 the machine itself does not scale (shared cores, turbo, other load): prl cannot beat that
    if record.get("processes", 1) == 1 or not single or "steps_per_s" not in record:
        return ""
    return f"scaling {record['steps_per_s'] / (record['processes'] * single):.2f} (1.00 = {record['processes']} x 1 process)"


def _mode(record: dict) -> str:
    """ ", central inference" where a run named its --inference mode (nothing for prl's own choice)."""
    mode = record.get("inference", "auto")
    backend = ", Ray backend" if record.get("backend") == "ray" else ""
    return backend + ("" if mode == "auto" else f", {mode} inference")


def _of_mode(records: list[dict], mode: str) -> list[dict]:
    """The local pool's records in inference `mode` (the Ray rows stand apart, at one shape)."""
    return [r for r in records if r.get("inference", "auto") == mode and r.get("backend", "local") == "local"]


def _agents(results: dict) -> int:
    """The env's agent count where it is a PettingZoo env (each agent a row), else 0."""
    return results.get("settings", {}).get("agents", 0)


def _floor_setting(record: dict, agents: int) -> str:
    if agents:
        return f"ParallelRows {record['envs'] // agents} envs = {record['envs']} rows, {record['actor']} actor"
    return f"SyncVectorEnv {record['envs']} envs, {record['actor']} actor"


def figure_rows(results: dict) -> list[tuple]:
    """One table row per measurement of figures 1 to 5, 7 and 8."""
    single = steps_per_s_of(results["floor"][0])
    agents = _agents(results)
    raw = f"raw ParallelEnv ({agents} agents)" if agents else "raw env"
    rows = [_row("1 floor", f"{raw}, processes={r['processes']}", r, _scaling(r, single)) for r in results["floor"]]
    rows += [_row("2 collection floor", _floor_setting(r, agents), r) for r in results["collection_floor"]]
    rows += [
        _row(
            "3 prl collection",
            f"W={r['workers']} x E={r['envs']}{_mode(r)}",
            r,
            f"efficiency {r['efficiency']:.2f}, pool start {r['pool_start_s']:.1f} s"
            + (f", {r['rollout_bytes'] / 1024:,.0f} KiB per rollout" if "rollout_bytes" in r else ""),
        )
        for r in results["prl_collection"]
    ]
    for r in results["prl_training"]:
        mode = " overlap" if r.get("overlap") else " SB3's PPO settings" if r.get("sb3_settings") else ""
        note = f"{r['env_steps']:,} steps, process wall {r['process_wall_s']:.1f} s" if "env_steps" in r else ""
        rows.append(_row("4 prl end-to-end", f"W={r['workers']} x E={r['envs']}{mode}{_mode(r)}", r, note))
    reference = results["reference"]
    policy = "CnnPolicy" if results["settings"]["env"].startswith("ALE/") else "MlpPolicy"
    for key, vec_env in (
        ("sb3_dummy", "DummyVecEnv"),
        ("sb3_subproc", "SubprocVecEnv"),
        ("sb3_dummy_one_thread", "DummyVecEnv"),
    ):
        record = reference.get(key)
        if record is None:
            continue
        threads = record.get("torch_threads")
        setting = f"SB3 PPO {policy}, {vec_env} 8 envs" + (f", {threads} thread(s)" if threads else "")
        note = "" if "skipped" in record else f"{record['steps']:,} steps in {record['seconds']:.1f} s"
        rows.append(_row("5 reference", setting, record, note))
    rows.append(
        _row("5 reference", "AsyncVectorEnv 8 envs, torch actor", reference["async_vector_env"], "collection only")
    )
    for solve in results["time_to_solve"]:
        setting = "CartPole-v1 defaults" + (", --mode overlap" if solve.get("overlap") else "")
        if "median_wall_s" not in solve:
            rows.append(_row("7 time to solve", setting, solve))
            continue
        split = ", ".join(f"{name[:-2]} {solve['median_' + name]:.2f}" for name in PHASES if "median_" + name in solve)
        note = (
            f"median wall {solve['median_wall_s']:.1f} s ({split}), eval return {solve['median_eval_return']:.1f}, "
            f"{solve['solved']}/{solve['finished']} solved"
        )
        rows.append(
            ("7 time to solve", f"{setting}, {solve['finished']} run(s)", _number(solve["median_steps_per_s"]), note)
        )
    memory = results.get("buffer_memory")
    if memory:
        shape = f"{memory['slots']} slots x {memory['rollout_steps']} steps x {memory['envs']} envs"
        for key, label in (("native", "as prl stores it"), ("float32", "all float32")):
            part = memory[key]
            rows.append(
                (
                    "8 buffer memory",
                    f"{shape}, {label}",
                    "-",
                    f"observations {part['obs_bytes'] / 2**20:,.1f} MiB, all tensors {part['total_bytes'] / 2**20:,.1f} MiB",
                )
            )
    return rows


def _grid(records: list[dict], plan: Plan, cell) -> list[tuple]:
    by_shape = {(r["workers"], r["envs"]): r for r in records if "steps_per_s" in r}
    return [
        (f"W={w}", "", *(cell(by_shape[w, e]) if (w, e) in by_shape else "-" for e in plan.envs)) for w in plan.workers
    ]


def print_report(results: dict, plan: Plan) -> None:
    """Print the figures, the scaling sweep and the ratios as plain tables on stdout."""
    info = results["machine"]
    print(
        f"prl throughput on {results['settings']['env']}: {info['cores']} cores ({info['cpu_model']}), "
        f"torch {info['torch']}, gymnasium {info['gymnasium']}, {info['date']}"
    )
    agents = _agents(results)
    unit = f"agent-steps per second, E = agent rows ({agents} per env)" if agents else "env steps per second"
    _print_table(f"figures (steps/s = {unit})", ("figure", "setting", "steps/s", "notes"), figure_rows(results))
    header = ("sweep", "", *(f"E={e}" for e in plan.envs))
    for mode in plan.inference:
        _print_table(
            f"6 scaling: prl collection steps/s (efficiency){_mode({'inference': mode})}",
            header,
            _grid(
                _of_mode(results["prl_collection"], mode),
                plan,
                lambda r: f"{r['steps_per_s']:,.0f} ({r['efficiency']:.2f})",
            ),
        )
    if plan.train_sweep:
        _print_table(
            "6 scaling: prl end-to-end steps/s",
            header,
            _grid(
                plain_runs(_of_mode(results["prl_training"], plan.inference[0])),
                plan,
                lambda r: f"{r['steps_per_s']:,.0f}",
            ),
        )
    _print_table(
        "ratios",
        ("ratio", "source", "value"),
        [(r["ratio"], r["source"], _number(r["value"], 2)) for r in results["ratios"]],
    )


def plot(results: dict, plan: Plan, path: Path) -> None:
    """Steps/s against workers, one line per envs-per-worker, for collection and (when swept) training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("prl collection", _of_mode(results["prl_collection"], plan.inference[0])),
        ("prl end-to-end training", plain_runs(_of_mode(results["prl_training"], plan.inference[0]))),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False)
    for axis, (title, records) in zip(axes, panels):
        for index, envs in enumerate(plan.envs):
            points = sorted(
                (r["workers"], r["steps_per_s"]) for r in records if r["envs"] == envs and "steps_per_s" in r
            )
            if points:
                axis.plot(*zip(*points), marker="o", color=f"C{index}", label=f"E={envs}")
            if title == "prl collection":  # the ceiling: every core running the one-process floor
                ceiling = [(w, min(w, usable_cores()) * best_floor(results, envs)) for w in plan.workers]
                axis.plot(*zip(*ceiling), linestyle=":", color=f"C{index}", label=f"E={envs}: cores x floor")
        dummy = steps_per_s_of(results["reference"].get("sb3_dummy"))
        if dummy and title != "prl collection":
            axis.axhline(dummy, color="gray", linestyle="--", label="SB3 DummyVecEnv")
        axis.set_xscale("log", base=2)
        ylabel = "agent-steps/s" if _agents(results) else "env steps/s"
        axis.set(title=title, xlabel="workers (W)", ylabel=ylabel, ylim=(0, axis.get_ylim()[1] * 1.1))
        ticks = sorted(set(plan.workers) | {r["workers"] for r in records if "steps_per_s" in r})
        axis.set_xticks(ticks, [str(w) for w in ticks])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    figure.suptitle(f"{results['settings']['env']}, {results['machine']['cores']} cores, {results['machine']['date']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
