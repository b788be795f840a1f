"""What a throughput run measures and for how long: the plans of `throughput.py`, read by its report too."""

from __future__ import annotations

from dataclasses import dataclass, replace

from prl.envs.spec import EnvSpec


@dataclass(frozen=True)
class Plan:
    """Which shapes are measured and for how long; --quick shortens everything."""

    workers: tuple[int, ...] = (1, 2, 4, 8)
    envs: tuple[int, ...] = (4, 16, 32, 64)  # 32: the shape of the collection-efficiency target (2 x 32)
    floor_s: float = 3.0
    collect_s: float = 3.0
    train_steps: int = 100_000
    train_sweep: bool = True
    sb3_steps: int = 100_000
    solve_runs: int = 3
    device: str = "auto"
    """prl's learner (and central inference) device: auto (prl's choice), cpu, cuda or cuda:N."""
    recurrent: bool = False
    """Also train LSTM and GRU policies at the default shape, against the MLP (`throughput.MEMORIES`)."""
    inference: tuple[str, ...] = ("auto",)
    """prl's --inference modes: the first gets every run; each other one collects over the same
    grid and trains at the same shapes (the grid when sweeping), and at the default shape overlapped."""


QUICK = Plan(
    workers=(1, 2, 8),
    envs=(4, 32),
    floor_s=1.0,
    collect_s=1.5,
    train_steps=20_000,
    train_sweep=False,
    sb3_steps=20_000,
    solve_runs=1,
)

IMAGE_PLAN = Plan(
    workers=(1, 2),
    envs=(4, 8),
    floor_s=3.0,
    collect_s=4.0,
    train_steps=16_384,
    train_sweep=False,
    sb3_steps=8_192,
    solve_runs=0,
)
"""Image envs step and act about 100 times slower than CartPole: fewer shapes, 16 updates of the Atari batch."""

IMAGE_QUICK = replace(IMAGE_PLAN, envs=(4,), floor_s=1.0, collect_s=1.5, train_steps=4_096, sb3_steps=2_048)


def plan_for(spec: EnvSpec, quick: bool) -> Plan:
    """The shapes and budgets for `spec`'s env: the image plan where observations hold an image."""
    if spec.obs_layout.has_images:
        return IMAGE_QUICK if quick else IMAGE_PLAN
    return QUICK if quick else Plan()
