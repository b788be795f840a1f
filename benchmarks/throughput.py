"""Throughput of prl on this machine, next to its floors and the systems it competes with.

    python benchmarks/throughput.py            # roughly 10 minutes on 2 cores
    python benchmarks/throughput.py --quick    # under 2 minutes: fewer shapes, shorter budgets
    python benchmarks/throughput.py --quick --recurrent  # also LSTM and GRU policies against the MLP
    python benchmarks/throughput.py --out DIR  # also DIR/results.json, DIR/throughput.png and DIR/records.jsonl
    python benchmarks/throughput.py --env ALE/Breakout-v5  # pixels: the Nature CNN, SB3 CnnPolicy (atari extra)
    python benchmarks/throughput.py --env ALE/Breakout-v5 --inference worker central --device cuda  # a GPU machine
    python benchmarks/throughput.py --env pettingzoo:mpe2.simple_spread_v3  # each agent a row: agent-steps/s
    python benchmarks/throughput.py --straggler  # sync, overlap and async on heavy-tailed step times (2 minutes)

Every figure is measured in the same run, because absolute numbers move by up to 30% between
machines of the same kind: read the ratios.
`benchmarks/README.md` explains each figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import _reference as ref
import gymnasium as gym
import torch
from _plan import Plan, agent_rows, plan_for
from _report import PHASES, best_floor, plain_runs, plot, print_report, steps_per_s_of, usable_cores
from _stragglers import measure_stragglers, print_stragglers

import prl
from prl import ConfigError, Learner, tuned_config
from prl.collection.backends import open_collector
from prl.collection.buffers import TrajectoryBuffer
from prl.collection.processes import resolve_start_method
from prl.config import Config, to_flat
from prl.envs import agents as env_agents
from prl.envs.factory import EnvFactory, probe_env
from prl.envs.observations import map_obs
from prl.envs.spec import EnvSpec

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "scripts" / "train.py"

ROLLOUT_STEPS = 32
"""Steps per env per rollout in every prl run here, as in the CartPole preset and SB3's n_steps."""

README_SHAPE = (8, 4)
"""Workers x envs per worker of the command in prl's README (`--workers 8 --envs-per-worker 4`);
for a PettingZoo env, E rounded to a whole number of its envs (`readme_shape`)."""

DEFAULT_SHAPE = (2, 32)
"""prl's default workers x envs per worker with the CartPole preset (other envs: their preset's, `default_shape`)."""

SAMPLE_FACTORY_STEPS_PER_S = 11_400
"""Sample Factory 2.1.1 APPO on CartPole-v1, 2 workers x 20 envs, 2-core CPU (from its own run, kept as a constant); not measured here."""

MIN_UPDATES = 4
"""The fewest updates an end-to-end run makes; wider shapes than the plan's budget allows get more steps."""

SAMPLE_FACTORY_ATARI_FRAMES_PER_S = {"10 cores, 1 GPU": 48_000, "36 cores, 4 GPUs": 136_000}
"""Sample Factory's published Atari throughput in frames/s (env steps x 4, frameskip 4), on its
own hardware; not measured here."""

ATARI_FRAMES_PER_STEP = 4
"""Frames per env step of prl's Atari envs (frameskip 4), to compare with figures in frames."""

SOLVED_RETURN = 475.0
"""CartPole-v1's reward threshold: an evaluation at or above it counts as solved."""

TRAIN_TIMEOUT_S = 1800
"""A train.py run that takes longer than this is stuck, not slow: it is reported and the benchmark goes on."""

WARMUP_COLLECTS = 2
"""Rollouts collected before prl's clock starts: the first ones pay for page faults and caches."""

SB3_LIKE_PPO = dict(
    rollout_steps=ROLLOUT_STEPS, epochs=20, minibatch_size=256, gamma=0.98, gae_lambda=0.8, lr=1e-3, ent_coef=0.0
)
"""SB3's tuned CartPole PPO settings: one extra prl run uses them, to compare the systems at equal work per step."""

START_METHOD = resolve_start_method(Config())
"""How this benchmark starts its own processes: prl's rule (never plain fork)."""

SB3_TORCH_THREADS = 1
"""Torch threads of the SB3 runs where prl's learner has one (learner_threads=1). With torch's default
of one per core, its OpenMP threads spin-wait, and SB3 fell to 1/8 of its speed here whenever
another process wanted a core. Where the env's preset gives the learner more threads (Atari: 2),
SB3 gets as many, and one more DummyVecEnv run keeps one thread."""


def default_shape(env_id: str, plan: Optional[Plan] = None) -> tuple[int, int]:
    """Workers x envs per worker of the env's preset (prl's defaults where it has none); for a
    PettingZoo env whose E there is no multiple of its agents, the plan's (`Plan.default_envs`)."""
    config = tuned_config(env_id)
    envs = config.envs_per_worker
    if plan is not None and plan.agents and envs % plan.agents:
        envs = plan.default_envs
    return config.workers, envs


def readme_shape(plan: Plan) -> tuple[int, int]:
    """README_SHAPE, its E rounded to a whole number of a PettingZoo env's agents (8 x 3 with 3 agents)."""
    workers, envs = README_SHAPE
    return workers, agent_rows(envs, plan.agents)


def probe(env_id: str) -> EnvSpec:
    """`probe_env` for `env_id` with prl's defaults, and for a PettingZoo env one env's agents as the
    rows per worker (prl's default 16 need not be a multiple of them)."""
    rows = Config.envs_per_worker
    if env_id.startswith(env_agents.PREFIX):
        env = EnvFactory(env_id)()
        rows = len(env.possible_agents) or 1
        env.close()
    return probe_env(Config(env=env_id, envs_per_worker=rows))


def log(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the tables."""
    print(message, file=sys.stderr, flush=True)


JOURNAL: Optional[Path] = None
"""With --out: DIR/records.jsonl, where each run's record is appended as soon as it is measured,
so that a benchmark cut short (a time limit, a crash, Ctrl-C) keeps every figure it reached."""


def kept(figure: str, record: dict) -> dict:
    """`record`, appended to the journal (when there is one) as one JSON line naming its figure."""
    if JOURNAL is not None:
        with JOURNAL.open("a") as journal:
            journal.write(json.dumps({"figure": figure, **record}) + "\n")
    return record


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what `platform` knows elsewhere."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict:
    """What the numbers depend on: cores, CPU, versions, load, date and prl's commit."""
    return {
        "cores": usable_cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "gymnasium": gym.__version__,
        "prl": prl.__version__,
        "prl_commit": _git("rev-parse", "HEAD"),
        "prl_tree_dirty": bool(_git("status", "--porcelain", "--", "src", "scripts")),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def skipped(reason: str) -> dict:
    """A record for a measurement that did not run, with the reason printed now."""
    log(f"skipped: {reason}")
    return {"skipped": reason}


# ---- prl measurements ------------------------------------------------------------------------


def _fitted(env_id: str, workers: int, envs: int, steps: int, ppo: Optional[dict] = None) -> dict:
    # Config rejects a minibatch larger than the batch and a run shorter than one batch, and the
    # smallest shapes can be both; shrink only what must shrink. A run at a large shape gets at
    # least MIN_UPDATES updates, so that its rate is not one collect and one update.
    ppo = ppo or {}
    probe = tuned_config(
        env_id, workers=workers, envs_per_worker=envs, **{**ppo, "minibatch_size": 2, "steps": 1 << 40}
    )
    wanted_minibatch = ppo.get("minibatch_size", tuned_config(env_id).ppo.minibatch_size)
    steps = max(steps, MIN_UPDATES * probe.batch_size)
    return {**ppo, "minibatch_size": min(wanted_minibatch, probe.batch_size), "steps": steps}


def prl_collection(
    env_id: str,
    workers: int,
    envs: int,
    seconds: float,
    inference: str = "auto",
    device: str = "auto",
    backend: str = "local",
) -> dict:
    """Steps/s of the backend's `collect()` with `workers` x `envs`, repeated for `seconds`, learner idle.

    The Ray backend also records the bytes of one actor's rollout, as they cross the object store.
    """
    fixed = {"rollout_steps": ROLLOUT_STEPS}
    shape = {"workers": workers, "envs_per_worker": envs, **inference_options(inference), "device": device}
    config = tuned_config(env_id, backend=backend, **shape, **_fitted(env_id, workers, envs, 0, fixed))
    learner = Learner(config)
    started = time.perf_counter()
    with open_collector(config, learner.policy) as pool:
        start_s = time.perf_counter() - started
        mode = pool.inference
        for _ in range(WARMUP_COLLECTS):
            pool.collect(learner.device)
        collects = steps = 0
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds:
            # agent-steps, as prl counts them: every row's step, less a PettingZoo env's dead agents' padding
            steps += pool.collect(learner.device).agent_steps
            collects += 1
        elapsed = time.perf_counter() - begin
        transfer = getattr(pool, "last_transfer_bytes", None)
    record = ref.rate(steps, elapsed, workers=workers, envs=envs, pool_start_s=start_s)
    record |= {"inference": inference, "inference_used": mode, "backend": backend}
    if transfer is not None:
        record |= {"rollout_bytes": transfer / workers, "rollout_steps": ROLLOUT_STEPS, "rollouts": collects * workers}
    return record


INFERENCE_MODES = ("auto", "worker", "central", "central-thread", "central-process")
"""The benchmark's inference modes: prl's --inference values (central with prl's default server),
and central inference with its server named: `--inference-server thread` or `process`."""


def inference_options(mode: str) -> dict:
    """prl's options for one of `INFERENCE_MODES` (none for auto, prl's own choice)."""
    if mode == "auto":
        return {}
    inference, _, server = mode.partition("-")
    return {"inference": inference, **({"inference_server": server} if server else {})}


def train_args(
    env_id: str,
    workers: int,
    envs: int,
    steps: int,
    ppo: Optional[dict] = None,
    overlap: bool = False,
    inference: str = "auto",
    device: str = "auto",
    backend: str = "local",
) -> list[str]:
    """train.py flags for one end-to-end run: the env's tuned defaults, or the `ppo` settings where they differ."""
    preset = to_flat(tuned_config(env_id, workers=workers, envs_per_worker=envs))
    wanted = _fitted(env_id, workers, envs, steps, ppo)
    flags = {"env": env_id, "workers": workers, "envs-per-worker": envs, "steps": wanted.pop("steps"), "out": "TMP"}
    args = [part for name, value in flags.items() for part in (f"--{name}", str(value))]
    args += ["--no-progress", "--eval-episodes", "0"] + (["--mode", "overlap"] if overlap else [])
    args += [
        part for name, value in inference_options(inference).items() for part in (f"--{name.replace('_', '-')}", value)
    ]
    args += ["--device", device] if device != "auto" else []
    args += ["--backend", backend] if backend != "local" else []
    for name, value in wanted.items():
        if preset[name] != value:
            args += ["--" + name.replace("_", "-"), str(value)]
    return args


def run_train(args: list[str]) -> dict:
    """Run scripts/train.py with `args` ("TMP" is a fresh folder) and time the whole process from outside."""
    command = "python scripts/train.py " + " ".join(args)
    with tempfile.TemporaryDirectory(prefix="prl-bench-") as out:
        argv = [sys.executable, str(TRAIN_SCRIPT)] + [out if arg == "TMP" else arg for arg in args]
        started, launched_at = time.perf_counter(), time.time()
        try:
            process = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return skipped(f"`{command}` ran past {TRAIN_TIMEOUT_S} s") | {"command": command}
        wall_s = time.perf_counter() - started
        summary_path = Path(out) / "summary.json"
        if process.returncode != 0 or not summary_path.exists():
            tail = (process.stderr.strip().splitlines() or ["no output"])[-1]
            return skipped(f"`{command}` failed with exit code {process.returncode}: {tail}") | {"command": command}
        summary = json.loads(summary_path.read_text())
    return {"command": command, "process_wall_s": wall_s, **summary, **phases(summary, launched_at, wall_s)}


def phases(summary: dict, launched_at: float, process_wall_s: float) -> dict:
    """The process's wall time split into PHASES, from its summary.json and the time it was launched."""
    if "started_at" not in summary:
        return {}
    split = {
        "import_s": summary["started_at"] - launched_at,
        "startup_s": summary["startup_s"],
        "train_s": summary["train_s"],
        "eval_s": summary.get("eval_s", 0.0),
    }
    split["exit_s"] = process_wall_s - sum(split.values())
    return split


def prl_training(
    env_id: str,
    workers: int,
    envs: int,
    steps: int,
    ppo: Optional[dict] = None,
    overlap: bool = False,
    inference: str = "auto",
    device: str = "auto",
    backend: str = "local",
) -> dict:
    """Steps/s of a whole `scripts/train.py` run (from its summary.json), plus its wall time seen from outside."""
    record = run_train(train_args(env_id, workers, envs, steps, ppo, overlap, inference, device, backend))
    shape = {"workers": workers, "envs": envs, "overlap": overlap, "sb3_settings": ppo is not None}
    return {**shape, "inference": inference, "backend": backend, **record}


def time_to_solve(runs: int, overlap: bool) -> dict:
    """Wall time and evaluation return of `scripts/train.py --env CartPole-v1` with its tuned defaults."""
    records = []
    for index in range(runs):
        log(f"time to solve{' (overlap)' if overlap else ''}: run {index + 1} of {runs}")
        args = ["--env", "CartPole-v1", "--out", "TMP", "--no-progress", "--seed", str(index + 1)]
        records.append(run_train(args + (["--mode", "overlap"] if overlap else [])))
    done = [r for r in records if "eval_return_mean" in r]
    if not done:
        return {"runs": records, "skipped": "no run finished"}
    return {
        "runs": records,
        "overlap": overlap,
        "median_wall_s": statistics.median(r["process_wall_s"] for r in done),
        **{
            f"median_{name}": statistics.median(r[name] for r in done)
            for name in PHASES
            if all(name in r for r in done)
        },
        "median_eval_return": statistics.median(r["eval_return_mean"] for r in done),
        "median_steps_per_s": statistics.median(r["steps_per_s"] for r in done),
        "solved": sum(r["eval_return_mean"] >= SOLVED_RETURN for r in done),
        "finished": len(done),
    }


# ---- the figures -----------------------------------------------------------------------------


def measure_floors(env_id: str, spec: EnvSpec, plan: Plan) -> dict:
    """Figures 1 and 2: raw stepping with 1 and 2 processes, and one-process collection per E and actor.

    The collection floor acts with the env's preset network (the Nature CNN on Atari), the one
    prl's workers act with in figure 3. For a PettingZoo env both count agent-steps: each process
    of the raw floor steps one ParallelEnv, and the collection floor E agent rows of E / agents
    ParallelEnvs (`_reference.ParallelRows`).
    """
    context = multiprocessing.get_context(START_METHOD)
    policy = tuned_config(env_id).policy
    floors = {"floor": [], "collection_floor": []}
    for processes in sorted({1, min(2, usable_cores())}):
        log(f"floor: raw {env_id} stepping, processes={processes}")
        floors["floor"].append(kept("floor", ref.raw_floor(env_id, processes, plan.floor_s, context)))
    for envs in plan.envs:
        for actor in ("torch", "worker"):
            vector = f"{envs // spec.agents} ParallelEnvs, {envs} agent rows" if spec.agents else f"{envs} envs"
            log(f"collection floor: {ref.vector_name(spec)} of {vector} + {actor} actor")
            floor = ref.collection_floor(env_id, spec, envs, plan.collect_s, actor, policy)
            floors["collection_floor"].append(kept("collection_floor", floor))
    return floors


def buffer_bytes(buffer: TrajectoryBuffer) -> dict:
    """Bytes of a trajectory buffer's observation tensors and of all its tensors."""
    obs: list[int] = []
    map_obs(lambda tensor: obs.append(tensor.nbytes), buffer.obs)
    others = [value.nbytes for name, value in vars(buffer).items() if name != "obs" and hasattr(value, "nbytes")]
    return {"obs_bytes": sum(obs), "total_bytes": sum(obs) + sum(others)}


def measure_memory(env_id: str, spec: EnvSpec, plan: Optional[Plan] = None) -> dict:
    """Figure 8: the shared trajectory buffer of the env's preset shape, as prl allocates it and in float32.

    prl keeps every observation leaf in its own dtype (uint8 images stay uint8); the float32 row
    is the same buffer with every observation value stored as a float32, as prl stored them
    before. Both buffers are allocated here and their tensors' sizes read back. A PettingZoo env's
    buffer has its agent rows at the default shape, and their alive flags and team returns.
    """
    workers, envs = default_shape(env_id, plan)
    config = tuned_config(env_id, workers=workers, envs_per_worker=envs)
    shape = (config.workers, config.rollout_steps, config.envs_per_worker)
    values = sum(math.prod(leaf.shape) for leaf in spec.obs_layout.leaves)
    agents = {"agents": bool(spec.agents)}
    native = buffer_bytes(TrajectoryBuffer(*shape, spec.obs_layout, spec.action_dim, **agents))
    as_float = buffer_bytes(TrajectoryBuffer(*shape, values, spec.action_dim, **agents))
    return {
        "slots": shape[0],
        "rollout_steps": shape[1],
        "envs": shape[2],
        "bytes_per_obs": spec.obs_layout.bytes_per_step,
        "native": native,
        "float32": as_float,
        "obs_ratio": as_float["obs_bytes"] / native["obs_bytes"],
    }


def measure_collection(env_id: str, plan: Plan) -> list[dict]:
    """Figures 3 and 6: prl collection over the W x E grid (efficiency is added once the floors exist)."""
    records = []
    for workers in plan.workers:  # the modes side by side at each shape, in the order the shapes were given
        for envs in plan.envs:
            for inference in plan.inference:
                log(f"prl collection: {workers} workers x {envs} envs, {inference} inference")
                record = prl_collection(env_id, workers, envs, plan.collect_s, inference, plan.device)
                records.append(kept("prl_collection", record))
    if ref.missing("ray"):
        log(f"skipped the Ray row: {ref.missing('ray')}")
        return records
    workers, envs = default_shape(env_id, plan)
    log(f"prl collection: {workers} workers x {envs} envs, Ray backend")
    records.append(kept("prl_collection", prl_collection(env_id, workers, envs, plan.collect_s, backend="ray")))
    return records


def add_efficiency(results: dict) -> None:
    """Collection efficiency = prl collection / (min(W, cores) x best one-process floor at the same E)."""
    for record in results["prl_collection"]:
        ceiling = min(record["workers"], usable_cores()) * best_floor(results, record["envs"])
        record["efficiency"] = record["steps_per_s"] / ceiling


def measure_training(env_id: str, plan: Plan) -> list[dict]:
    """Figures 4 and 6: whole train.py runs with the env's tuned defaults, over the grid when sweeping.

    Beside the grid: the default and README shapes in overlap mode, and the default shape with
    SB3's PPO settings (the same learner work per env step as the SB3 rows).
    """
    default, readme = default_shape(env_id, plan), readme_shape(plan)
    shapes = [(w, e) for w in plan.workers for e in plan.envs] if plan.train_sweep else [default]
    shapes += [shape for shape in (default, readme) if shape not in shapes]
    runs = [(w, e, None, False) for w, e in shapes]
    runs += [(*default, None, True), (*readme, None, True)]
    if env_id == "CartPole-v1":
        runs.append((*default, SB3_LIKE_PPO, False))
    runs = [(*run, plan.inference[0]) for run in runs]
    for mode in plan.inference[1:]:
        grid = [(w, e) for w in plan.workers for e in plan.envs] if plan.train_sweep else [default]
        runs += [(w, e, None, False, mode) for w, e in grid] + [(*default, None, True, mode)]

    # Each shape's runs in every mode follow one another, so that a run cut short has compared
    # the modes at every shape it reached.
    def kind(run: tuple) -> tuple:  # shape, SB3 settings, overlap
        return run[0], run[1], run[2] is not None, run[3]

    kinds = list(dict.fromkeys(map(kind, runs)))
    runs.sort(key=lambda run: kinds.index(kind(run)))
    records = []
    for workers, envs, ppo, overlap, inference in runs:
        label = " overlap" if overlap else " SB3 settings" if ppo else ""
        log(
            f"prl end-to-end{label}: {workers} workers x {envs} envs, {inference} inference, {plan.train_steps:,} steps"
        )
        record = prl_training(env_id, workers, envs, plan.train_steps, ppo, overlap, inference, plan.device)
        records.append(kept("prl_training", record))
    if not ref.missing("ray"):
        log(f"prl end-to-end: {default[0]} workers x {default[1]} envs, Ray backend, {plan.train_steps:,} steps")
        records.append(kept("prl_training", prl_training(env_id, *default, plan.train_steps, backend="ray")))
    return records


MEMORIES = (("lstm", 64), ("gru", 64))
"""The recurrent policies `--recurrent` trains at the default shape: the core width of prl/CartPoleNoVel-v1's preset."""


def measure_recurrent(env_id: str, plan: Plan) -> list[dict]:
    """Whole train.py runs with each of MEMORIES at the default shape and the env's preset otherwise,
    to set beside the MLP's run at that shape (in `prl_training`)."""
    default = default_shape(env_id, plan)
    records = []
    for kind, size in MEMORIES:
        log(f"prl end-to-end: {default[0]} workers x {default[1]} envs, {kind} {size}, {plan.train_steps:,} steps")
        options = {"recurrent": kind, "recurrent_size": size}
        record = prl_training(env_id, *default, plan.train_steps, options, False, plan.inference[0], plan.device)
        records.append(kept("recurrent_training", record | {"sb3_settings": False, **options}))
    return records


def sb3_runs(env_id: str) -> list[tuple[str, str, int]]:
    """(record key, vector env, torch threads) of the SB3 runs: as many threads as prl's learner has.

    Where that is more than one, a DummyVecEnv run with one thread is added: SB3's own best
    setting where cores are contended (see `SB3_TORCH_THREADS`).
    """
    threads = max(SB3_TORCH_THREADS, tuned_config(env_id).learner_threads)
    runs = [("sb3_dummy", "DummyVecEnv", threads), ("sb3_subproc", "SubprocVecEnv", threads)]
    if threads > 1:
        runs.append(("sb3_dummy_one_thread", "DummyVecEnv", 1))
    return runs


def measure_references(env_id: str, spec: EnvSpec, plan: Plan) -> dict:
    """Figure 5: SB3 PPO with both vector envs, and gymnasium's AsyncVectorEnv collection.

    Both step single-agent gymnasium envs: a PettingZoo env skips them with the reason.
    """
    references = {}
    if spec.agents:
        for name, vec_env, _ in sb3_runs(env_id):
            reason = f"SB3 {vec_env} steps single-agent envs (PettingZoo: sb3_references.py shared)"
            references[name] = skipped(reason)
        references["async_vector_env"] = skipped("AsyncVectorEnv steps single-agent envs, not a PettingZoo env")
        return references
    reason = ref.missing("stable_baselines3")
    for name, vec_env, threads in sb3_runs(env_id):
        if reason:
            references[name] = skipped(f"SB3 PPO with {vec_env}: {reason}")
            continue
        log(f"reference: SB3 PPO with {vec_env}, {threads} torch thread(s), {plan.sb3_steps:,} steps")
        references[name] = kept(name, ref.sb3_training(env_id, vec_env, plan.sb3_steps, threads))
    log(f"reference: gymnasium AsyncVectorEnv, {ref.ASYNC_ENVS} envs + the preset's policy")
    collection = ref.async_collection(env_id, spec, plan.collect_s, START_METHOD, tuned_config(env_id).policy)
    references["async_vector_env"] = kept("async_vector_env", collection)
    return references


def _find(
    records: list[dict],
    shape: tuple,
    overlap: bool = False,
    sb3_settings: bool = False,
    inference: str = "auto",
    backend: str = "local",
) -> Optional[dict]:
    return next(
        (
            r
            for r in records
            if (r["workers"], r["envs"]) == shape
            and r["overlap"] == overlap
            and r["sb3_settings"] == sb3_settings
            and r.get("inference", "auto") == inference
            and r.get("backend", "local") == backend
        ),
        None,
    )


def primary_runs(records: list[dict], results: dict) -> list[dict]:
    """The records of the first --inference mode, which gets every run (the others are compared with it)."""
    mode = results.get("settings", {}).get("inference", ("auto",))[0]
    return [r for r in records if r.get("inference", "auto") == mode and r.get("backend", "local") == "local"]


def ratios(results: dict) -> list[dict]:
    """The comparisons to read: prl against SB3 and Sample Factory, and the README shape against the best."""
    modes = results.get("settings", {}).get("inference", ("auto",))
    every_mode = [r for r in results["prl_training"] if "steps_per_s" in r]
    training = primary_runs(every_mode, results)
    plain = plain_runs(training)
    best_plain = max(plain, key=steps_per_s_of, default=None)
    best_any = max([r for r in training if not r["sb3_settings"]], key=steps_per_s_of, default=None)
    default_at = tuple(results.get("settings", {}).get("default_shape", DEFAULT_SHAPE))
    default = _find(training, default_at, inference=modes[0])
    readme_at = tuple(results.get("settings", {}).get("readme_shape", README_SHAPE))
    readme = _find(training, readme_at, inference=modes[0])
    equal_work = _find(training, default_at, sb3_settings=True, inference=modes[0])
    reference = results["reference"]
    dummy = steps_per_s_of(reference.get("sb3_dummy"))
    cartpole = results.get("settings", {}).get("env", "CartPole-v1") == "CartPole-v1"

    def shape(record: Optional[dict]) -> str:
        if not record:
            return "-"
        return f"{record['workers']}x{record['envs']}{', overlap' if record['overlap'] else ''}"

    def sb3(key: str, vec_env: str) -> str:
        threads = (reference.get(key) or {}).get("torch_threads")
        return f"SB3 {vec_env}" + (f" ({threads} torch thread{'s' if threads > 1 else ''})" if threads else "")

    here = "measured here"
    rows = [
        (
            f"prl end-to-end, default ({shape(default)}) / {sb3('sb3_dummy', 'DummyVecEnv')}",
            steps_per_s_of(default),
            dummy,
            here,
        ),
        (
            f"prl end-to-end, best ({shape(best_any)}) / {sb3('sb3_dummy', 'DummyVecEnv')}",
            steps_per_s_of(best_any),
            dummy,
            here,
        ),
        (
            f"prl end-to-end, default ({shape(default)}) / {sb3('sb3_subproc', 'SubprocVecEnv')}",
            steps_per_s_of(default),
            steps_per_s_of(reference.get("sb3_subproc")),
            here,
        ),
        (
            f"README shape ({shape(readme)}) / best synchronous shape ({shape(best_plain)})",
            steps_per_s_of(readme),
            steps_per_s_of(best_plain),
            here,
        ),
    ]
    if "sb3_dummy_one_thread" in reference:
        one = sb3("sb3_dummy_one_thread", "DummyVecEnv")
        rows.insert(
            1,
            (
                f"prl end-to-end, default ({shape(default)}) / {one}",
                steps_per_s_of(default),
                steps_per_s_of(reference["sb3_dummy_one_thread"]),
                here,
            ),
        )
    if cartpole:  # the run at SB3's settings is CartPole's; on Atari prl's preset is already rl-zoo3's
        rows.insert(
            2,
            (
                f"prl at SB3's PPO settings ({shape(equal_work)}) / SB3 DummyVecEnv",
                steps_per_s_of(equal_work),
                dummy,
                here,
            ),
        )
    collections = primary_runs(results.get("prl_collection", []), results)
    collection = next((r for r in collections if (r["workers"], r["envs"]) == default_at), None)
    collected = {
        r.get("inference", "auto"): r
        for r in results.get("prl_collection", [])
        if (r["workers"], r["envs"]) == default_at and "steps_per_s" in r
    }
    # Central against worker with central named as such, else with the default server (the
    # process), else with the thread: a sweep of worker, central-thread and central-process
    # compares the default server with worker inference.
    central = next((mode for mode in ("central", "central-process", "central-thread") if mode in modes), "central")
    compared = (
        (central, "worker", f"{central} / worker inference"),
        ("central-process", "central-thread", "central inference, server process / server thread"),
    )
    for top, bottom, what in compared:
        if top not in modes or bottom not in modes:
            continue
        swept = sorted(
            {(r["workers"], r["envs"]) for r in every_mode if r.get("inference") == top and not r["overlap"]}
            - {default_at}
        )
        for shape_at in swept:  # the other shapes of a training sweep, synchronous
            rows.append(
                (
                    f"prl end-to-end ({shape_at[0]}x{shape_at[1]}), {what}",
                    steps_per_s_of(_find(every_mode, shape_at, inference=top)),
                    steps_per_s_of(_find(every_mode, shape_at, inference=bottom)),
                    here,
                )
            )
        for overlap in (False, True):
            label = f"{default_at[0]}x{default_at[1]}{', overlap' if overlap else ''}"
            rows.append(
                (
                    f"prl end-to-end ({label}), {what}",
                    steps_per_s_of(_find(every_mode, default_at, overlap=overlap, inference=top)),
                    steps_per_s_of(_find(every_mode, default_at, overlap=overlap, inference=bottom)),
                    here,
                )
            )
        rows.append(
            (
                f"prl collection ({default_at[0]}x{default_at[1]}), {what}",
                steps_per_s_of(collected.get(top)),
                steps_per_s_of(collected.get(bottom)),
                here,
            )
        )
    if collection and "efficiency" in collection:
        workers = min(collection["workers"], usable_cores())
        rows.append(
            (
                f"prl collection ({default_at[0]}x{default_at[1]}) / {workers} x one-process floor, same network",
                collection["steps_per_s"],
                collection["steps_per_s"] / collection["efficiency"],
                here,
            )
        )
    on_ray = _find(every_mode, default_at, inference="auto", backend="ray")
    if on_ray is not None:
        local = _find(every_mode, default_at, inference="auto") or default
        shape_text = f"{default_at[0]}x{default_at[1]}"
        rows.append(
            (
                f"Ray backend / local pool, end to end ({shape_text})",
                steps_per_s_of(on_ray),
                steps_per_s_of(local),
                here,
            )
        )
        ray_collection = next((r for r in results.get("prl_collection", []) if r.get("backend") == "ray"), None)
        rows.append(
            (
                f"Ray backend / local pool, collection ({shape_text})",
                steps_per_s_of(ray_collection),
                steps_per_s_of(collection),
                here,
            )
        )
    if results.get("settings", {}).get("env", "").startswith("ALE/"):  # Sample Factory's Atari figures are in frames
        local = [r for r in every_mode if not r["sb3_settings"] and r.get("backend", "local") == "local"]
        fastest = max(local, key=steps_per_s_of, default=None)
        label = f"{shape(fastest)}, {(fastest or {}).get('inference', 'auto')} inference"
        for hardware, frames in SAMPLE_FACTORY_ATARI_FRAMES_PER_S.items():
            rows.append(
                (
                    f"prl end-to-end frames/s, best ({label}) / Sample Factory {frames:,} ({hardware})",
                    steps_per_s_of(fastest) * ATARI_FRAMES_PER_STEP if fastest else None,
                    frames,
                    "a published constant, NOT measured here",
                )
            )
    for memory in results.get("recurrent_training", []):
        rows.append(
            (
                f"prl end-to-end ({shape(default)}), {memory['recurrent'].upper()} {memory['recurrent_size']} / MLP",
                steps_per_s_of(memory),
                steps_per_s_of(default),
                here,
            )
        )
    if cartpole:  # Sample Factory's figure is CartPole's
        sample_factory = (
            f"prl end-to-end, best ({shape(best_any)}) / Sample Factory 11,400",
            steps_per_s_of(best_any),
            SAMPLE_FACTORY_STEPS_PER_S,
            "a published constant, NOT measured here",
        )
        rows.insert(3, sample_factory)
    return [
        {
            "ratio": name,
            "value": top / bottom if top and bottom else None,
            "numerator": top,
            "denominator": bottom,
            "source": source,
        }
        for name, top, bottom, source in rows
    ]


def run(env_id: str, spec: EnvSpec, plan: Plan) -> dict:
    """Measure every figure in order and return them with the machine description."""
    settings = {
        "env": env_id,
        **asdict(plan),
        "start_method": START_METHOD,
        "default_shape": default_shape(env_id, plan),
        "readme_shape": readme_shape(plan),
        "ppo": SB3_LIKE_PPO,
        "sb3": ref.SB3_ATARI_SETTINGS if env_id.startswith("ALE/") else ref.SB3_SETTINGS,
    }
    results = {"machine": machine(), "settings": settings}
    torch.set_num_threads(1)  # this process plays prl's learner, which runs with learner_threads=1
    started = time.perf_counter()
    # prl goes first, so that its pool starts the forkserver with the preload prl chooses; the
    # floors and the reference systems' processes then fork from that same server.
    results["prl_collection"] = measure_collection(env_id, plan)
    results.update(measure_floors(env_id, spec, plan))
    add_efficiency(results)
    results["prl_training"] = measure_training(env_id, plan)
    if plan.recurrent:
        results["recurrent_training"] = measure_recurrent(env_id, plan)
    results["reference"] = measure_references(env_id, spec, plan)
    results["buffer_memory"] = measure_memory(env_id, spec, plan)
    if env_id == "CartPole-v1" and plan.solve_runs > 0:
        results["time_to_solve"] = [time_to_solve(plan.solve_runs, overlap) for overlap in (False, True)]
    else:
        results["time_to_solve"] = [skipped("time to solve is measured for CartPole-v1 only")]
    results["ratios"] = ratios(results)
    results["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["benchmark_wall_s"] = time.perf_counter() - started
    return results


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line: --quick, --out, --env, --workers, --envs, --inference, --device and --train-sweep."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and shorter budgets (under 2 minutes)")
    parser.add_argument("--out", type=Path, help="folder for results.json and throughput.png")
    parser.add_argument(
        "--env",
        default="CartPole-v1",
        help="Gymnasium id, or pettingzoo:<module> for a PettingZoo ParallelEnv (default: CartPole-v1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help=f"worker counts of the sweep (default: {' '.join(map(str, Plan().workers))})",
    )
    parser.add_argument(
        "--envs",
        type=int,
        nargs="+",
        help=f"envs per worker of the sweep, agent rows for a PettingZoo env (rounded to a multiple of its "
        f"agents) (default: {' '.join(map(str, Plan().envs))})",
    )
    parser.add_argument(
        "--inference",
        nargs="+",
        choices=INFERENCE_MODES,
        help="prl's inference modes to measure, e.g. worker central; central-thread and central-process name "
        "central inference's server (default: auto, prl's own choice)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="prl's learner device: auto (prl's choice: the GPU for pixel images where there is one, else the CPU), cpu, cuda or cuda:N",
    )
    parser.add_argument(
        "--recurrent",
        action="store_true",
        help="also train LSTM and GRU policies of 64 units at the default shape, against the MLP",
    )
    parser.add_argument(
        "--straggler",
        action="store_true",
        help="instead of the figures above: sync, overlap and async mode with 2 and 8 workers on prl/Stragglers-v0, "
        "whose step time is heavy-tailed, against the bound of its mean step time (writes DIR/stragglers.json)",
    )
    parser.add_argument(
        "--train-sweep",
        action="store_true",
        help="train at every workers x envs shape of the grid, in every inference mode (the full CartPole "
        "plan sweeps already; --quick and image envs train at the default shape unless this is given)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark; returns the exit code (0 also when the env needs a missing package)."""
    args = parse_args(argv)
    if args.straggler:
        results = {"machine": machine(), **measure_stragglers(run_train, args.quick, log)}
        print_stragglers(results)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "stragglers.json").write_text(json.dumps(results, indent=2) + "\n")
            log(f"wrote {args.out / 'stragglers.json'}")
        return 0
    try:
        spec = probe(args.env)
    except ConfigError as error:
        # e.g. HalfCheetah-v5 without mujoco, ALE/Breakout-v5 without ale-py
        if isinstance(error.__cause__, (gym.error.DependencyNotInstalled, ImportError)):
            print(f"skipped {args.env}: {error}")
            return 0
        print(f"throughput.py: error: {error}", file=sys.stderr)
        return 2
    plan = plan_for(spec, args.quick)
    envs = tuple(dict.fromkeys(agent_rows(count, spec.agents) for count in args.envs or plan.envs))
    if args.envs and envs != tuple(args.envs):
        log(f"{args.env} has {spec.agents} agents, each a row: --envs {' '.join(map(str, envs))}")
    plan = replace(
        plan,
        workers=tuple(args.workers or plan.workers),
        envs=envs,
        inference=tuple(dict.fromkeys(args.inference or plan.inference)),
        device=args.device,
        train_sweep=plan.train_sweep or args.train_sweep,
        recurrent=args.recurrent,
    )
    global JOURNAL
    JOURNAL = args.out / "records.jsonl" if args.out else None
    if JOURNAL is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        JOURNAL.write_text("")
        log(f"each record goes to {JOURNAL} as it is measured")
    results = run(args.env, spec, plan)
    print_report(results, plan)
    if args.out:
        (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if ref.missing("matplotlib"):
            log(f"no plot: {ref.missing('matplotlib')}")
        else:
            plot(results, plan, args.out / "throughput.png")
        log(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":  # workers start in fresh processes (forkserver or spawn), which import this file
    sys.exit(main())
