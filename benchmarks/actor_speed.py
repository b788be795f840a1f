"""How fast a worker acts for its envs: the numpy actor against the torch policy, on one core.

    python benchmarks/actor_speed.py            # about a minute
    python benchmarks/actor_speed.py --out DIR  # also DIR/actor_speed.json

A worker computes its envs' actions once per env step (`prl.nn.actors`). This times `act` alone
(observations already in hand, no env stepping) for `NumpyActor` and `TorchActor` on the same
policy, with torch on one thread as in a worker, for the MLP and for LSTM and GRU memories of
64 and 128 units, at 8 and 32 envs per worker, on CartPole with its velocities hidden. Each
figure is the best of 3 repeats of `CALLS` calls; the ratio is what matters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from prl.config import Config, PolicyConfig
from prl.envs.factory import probe_env
from prl.nn.actors import NumpyActor, TorchActor
from prl.nn.policy import build_policy

ENV = "prl/CartPoleNoVel-v1"
CALLS = 2000
REPEATS = 3


def time_actor(actor, obs: np.ndarray) -> float:
    """Microseconds per `act` call on `obs`, the best of REPEATS runs of CALLS calls."""
    starts = np.zeros(len(obs), dtype=bool)
    starts[0] = True  # one env starts an episode at each call, as envs do now and then
    best = float("inf")
    for _ in range(REPEATS):
        began = time.perf_counter()
        for _ in range(CALLS):
            actor.act(obs, starts)
        best = min(best, (time.perf_counter() - began) / CALLS)
    return best * 1e6


def measure() -> list[dict]:
    torch.set_num_threads(1)
    spec = probe_env(Config(env=ENV))
    rows = []
    for recurrent, size in ((None, 0), ("lstm", 64), ("gru", 64), ("lstm", 128), ("gru", 128)):
        policy = build_policy(
            spec, PolicyConfig(hidden_sizes=(64,), recurrent=recurrent, recurrent_size=size or 128), True, 10.0
        )
        for envs in (8, 32):
            obs = np.random.default_rng(0).standard_normal((envs, spec.obs_dim)).astype(np.float32)
            row = {"policy": recurrent or "mlp", "recurrent_size": size, "envs": envs}
            for name, cls in (("numpy", NumpyActor), ("torch", TorchActor)):
                row[f"{name}_us"] = time_actor(cls(policy, np.random.default_rng(0)), obs)
            row["torch_over_numpy"] = row["torch_us"] / row["numpy_us"]
            rows.append(row)
            print(
                f"{row['policy']:>4} {size:>3} units, {envs:>2} envs: numpy {row['numpy_us']:7.1f} us, "
                f"torch {row['torch_us']:7.1f} us per call ({row['torch_over_numpy']:.1f}x)",
                flush=True,
            )
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for actor_speed.json")
    args = parser.parse_args(argv)
    rows = measure()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "actor_speed.json").write_text(json.dumps({"env": ENV, "calls": CALLS, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
