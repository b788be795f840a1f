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
    agents: int = 0
    """A PettingZoo env's agent count (`EnvSpec.agents`), 0 for a single-agent env. Each agent is a
    row, so every E is a multiple of it, and every figure counts agent-steps."""
    default_envs: int = 0
    """E of an agent env's default shape where its preset's (or prl's default 16) is no multiple of
    its agents (`AGENT_DEFAULT_ENVS`); else the preset's E is the default."""


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


AGENT_ENVS = (4, 8, 16)
"""PettingZoo envs per worker of the agent plan's sweep (`--quick`: the first two): with 3 agents,
E = 12, 24 and 48 agent rows. Image envs: (1, 2), and `--quick` 1."""

AGENT_DEFAULT_ENVS = 8
"""PettingZoo envs per worker of an agent env's default shape, with prl's default 2 workers: 2 x 24
rows with 3 agents, a shape of the sweep, as CartPole's 2 x 32 is (image envs: the sweep's first E).
Only where the env's preset (or prl's default of 16 rows) gives no multiple of its agents;
simple_spread's preset is 2 x 24 itself."""


def agent_rows(envs: int, agents: int) -> int:
    """`envs` rows rounded to the nearest whole number of PettingZoo envs of `agents` agents (at least one)."""
    if not agents:
        return envs
    return max(1, (envs + agents // 2) // agents) * agents


def plan_for(spec: EnvSpec, quick: bool) -> Plan:
    """The shapes and budgets for `spec`'s env: the image plan where observations hold an image, and
    for a PettingZoo env E in multiples of its agents (`AGENT_ENVS`)."""
    if spec.obs_layout.has_images:
        plan = IMAGE_QUICK if quick else IMAGE_PLAN
    else:
        plan = QUICK if quick else Plan()
    if not spec.agents:
        return plan
    envs: tuple[int, ...] = AGENT_ENVS[:2] if quick else AGENT_ENVS
    default = AGENT_DEFAULT_ENVS
    if spec.obs_layout.has_images:
        envs, default = ((1,) if quick else (1, 2)), 1
    rows = tuple(count * spec.agents for count in envs)
    return replace(plan, envs=rows, agents=spec.agents, default_envs=default * spec.agents)
