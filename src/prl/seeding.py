"""Seeds: every random stream of a run, derived from the run seed by name.

A stream's seed is `numpy.random.SeedSequence([run seed, *path])`, and its path names it:

| stream | path |
| --- | --- |
| env `e` of worker `w` | (w, e, *incarnation) |
| worker `w`'s action noise | (w, ACTIONS, *incarnation) |
| worker `w`'s process-wide generators (Python's, numpy's, torch's) | (w, PROCESS, *incarnation) |
| evaluation episode `i` (also the video replay of `scripts/evaluate.py`) | (EVALUATION, i) |
| evaluation's own sampling (torch) | (EVALUATION,) |
| env `i` of the original program's custom loop | (i,) |

A worker's incarnation says which life of it this is, so that no life replays another's
episodes: () for a fresh run's first workers, (updates,) for the workers of a run resumed
after `updates` updates, (updates, REPLACEMENT, restarts) for a worker that replaces a dead
one, and any of these followed by (REBUILD, n) once its envs were rebuilt n times after env
errors.
"""

from __future__ import annotations

import numpy as np

ACTIONS = 1 << 20
"""Path tag of a worker's action noise."""

PROCESS = 1 << 21
"""Path tag of a worker process's global generators."""

REBUILD = 1 << 24
"""Path tag of a worker's envs rebuilt after an env error."""

REPLACEMENT = 1 << 25
"""Path tag of a worker started in place of a dead one."""

EVALUATION = 1 << 30
"""Path tag of evaluation episodes."""


def seed_for(seed: int, *path: int) -> int:
    """A 32-bit seed derived from the run seed and a path such as (worker, env index)."""
    return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def first_incarnation(updates: int) -> tuple[int, ...]:
    """The incarnation of a run's first workers: () for a fresh run, (updates,) for one resumed after `updates` updates."""
    return (updates,) if updates else ()


def replacement(updates: int, restarts: int) -> tuple[int, ...]:
    """The incarnation of a worker that replaces a dead one, the run's `restarts`-th restart."""
    return (updates, REPLACEMENT, restarts)


def rebuilt(incarnation: tuple[int, ...], rebuilds: int) -> tuple[int, ...]:
    """The incarnation of a worker's envs after their `rebuilds`-th rebuild (none for 0)."""
    return (*incarnation, REBUILD, rebuilds) if rebuilds else incarnation


def env_seed(seed: int, worker: int, env: int, incarnation: tuple[int, ...] = ()) -> int:
    """The seed of env `env` of worker `worker`."""
    return seed_for(seed, worker, env, *incarnation)


def action_seed(seed: int, worker: int, incarnation: tuple[int, ...] = ()) -> int:
    """The seed of worker `worker`'s action noise (worker or central inference alike)."""
    return seed_for(seed, worker, ACTIONS, *incarnation)


def process_seed(seed: int, worker: int, incarnation: tuple[int, ...] = ()) -> int:
    """The seed of worker `worker`'s process-wide generators, which an env may draw from."""
    return seed_for(seed, worker, PROCESS, *incarnation)


def loop_env_seed(seed: int, env: int) -> int:
    """The seed of env `env` of the original program's custom loop (`prl.compat.custom_loop.EnvVectorizer`)."""
    return seed_for(seed, env)


def evaluation_seed(seed: int, episode: int | None = None) -> int:
    """The seed of evaluation episode `episode`, or with None of evaluation's own sampling."""
    return seed_for(seed, EVALUATION) if episode is None else seed_for(seed, EVALUATION, episode)
