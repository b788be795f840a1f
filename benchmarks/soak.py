"""Soak test: train while a random worker is killed every few seconds, next to an undisturbed run.

    python benchmarks/soak.py                    # 1M CartPole steps each, a kill every 2 s
    python benchmarks/soak.py --quick            # 300k steps, a kill every 1 s
    python benchmarks/soak.py --steps 3000000 --kill-every 5 --env CartPole-v1

Both runs are `scripts/train.py` processes with the same options and seed. During the second,
this script sends SIGKILL to a random worker process every `--kill-every` seconds until the
run ends. It reports the restarts prl made, the steps/s lost against the undisturbed run, both
final evaluation returns, and whether any process or /dev/shm entry outlived the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import psutil

TRAIN = Path(__file__).resolve().parent.parent / "scripts" / "train.py"


def workers_of(pid: int) -> list[psutil.Process]:
    """The worker processes of a train.py process: the children of its forkserver (or its own spawned children)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    grandchildren = [g for child in children for g in child.children()]
    if grandchildren:
        return grandchildren
    return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]


def killer(pid: int, every_s: float, seed: int, kills: list) -> threading.Thread:
    """A thread that SIGKILLs a random worker of `pid` every `every_s` seconds while `pid` runs."""
    chooser = random.Random(seed)

    def loop() -> None:
        time.sleep(every_s)
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            workers = workers_of(pid)
            if workers:
                victim = chooser.choice(workers)
                try:
                    victim.send_signal(signal.SIGKILL)
                    kills.append(time.monotonic())
                except psutil.Error:
                    pass
            time.sleep(every_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def train(args: list[str], out: Path, kill_every: Optional[float]) -> dict:
    """Run train.py once (optionally under the killer); return its summary, restarts and leftovers."""
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), *args, "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    kills: list = []
    thread = killer(process.pid, kill_every, 0, kills) if kill_every else None
    _, stderr = process.communicate()
    wall_s = time.perf_counter() - started
    if thread is not None:
        thread.join(timeout=kill_every + 1)
    deadline = time.monotonic() + 5.0  # exiting workers and the forkserver get a moment to go
    leftovers = [p.pid for p in psutil.process_iter() if _in_session(p, process.pid)]
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.1)
        leftovers = [p.pid for p in psutil.process_iter() if _in_session(p, process.pid)]
    shm_after = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    if process.returncode != 0:
        return {
            "failed": f"exit code {process.returncode}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}"
        }
    summary = json.loads((out / "summary.json").read_text())
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {
        **summary,
        "process_wall_s": wall_s,
        "kills": len(kills),
        "worker_restarts": last.get("worker_restarts", 0),
        "leftover_processes": leftovers,
        "new_shm_entries": sorted(shm_after - shm_before),
    }


def _in_session(process: psutil.Process, session: int) -> bool:
    try:
        return os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def main(argv: Optional[list[str]] = None) -> int:
    """Run the undisturbed and the soaked training, print the comparison, and write it with --out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300k steps and a kill every second")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--steps", type=int, help="env steps per run (default 1,000,000)")
    parser.add_argument("--kill-every", type=float, help="seconds between kills (default 2)")
    parser.add_argument("--out", type=Path, help="write soak.json here")
    args = parser.parse_args(argv)
    steps = args.steps or (300_000 if args.quick else 1_000_000)
    every = args.kill_every or (1.0 if args.quick else 2.0)
    # Enough restarts for the whole run: a kill every `every` seconds over a window of 5 minutes.
    options = [
        "--env",
        args.env,
        "--steps",
        str(steps),
        "--seed",
        "1",
        "--max-worker-restarts",
        "1000",
        "--save-every",
        "0",
    ]
    with tempfile.TemporaryDirectory(prefix="prl-soak-") as folder:
        calm = train(options, Path(folder) / "calm", None)
        soaked = train(options, Path(folder) / "soaked", every)
    rows = [("undisturbed", calm), (f"a worker killed every {every:g} s", soaked)]
    print(f"{args.env}, {steps:,} env steps per run")
    for name, record in rows:
        if "failed" in record:
            print(f"{name}: FAILED ({record['failed']})")
            continue
        print(
            f"{name}: {record['steps_per_s']:,.0f} steps/s, {record['process_wall_s']:.1f} s, "
            f"kills {record['kills']}, restarts {record['worker_restarts']}, "
            f"eval return {record.get('eval_return_mean', float('nan')):.1f}, "
            f"leftover processes {len(record['leftover_processes'])}, new /dev/shm entries {len(record['new_shm_entries'])}"
        )
    if "failed" not in calm and "failed" not in soaked:
        print(f"steps/s kept under kills: {soaked['steps_per_s'] / calm['steps_per_s']:.2f}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "soak.json").write_text(
            json.dumps(
                {"env": args.env, "steps": steps, "kill_every_s": every, "calm": calm, "soaked": soaked}, indent=2
            )
        )
    return 0 if "failed" not in soaked else 1


if __name__ == "__main__":
    sys.exit(main())
