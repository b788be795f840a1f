"""Shared-memory buffers: trajectory slots written by workers, and the weights broadcast to them.

Both live in tensors allocated once with `share_memory_()`. Torch shares them with child
processes as file descriptors of already-unlinked segments, so nothing is left in /dev/shm
when the processes end, however they end. Only slot indices travel, through pipes.
"""

from __future__ import annotations

import os
import shutil
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from prl.envs.observations import Observations, ObsLayout, map_obs
from prl.errors import ConfigError

UNWRITTEN = float("nan")
"""Every float field starts as NaN (and every int field as -1), so data nobody wrote is easy to spot."""


class Batch(NamedTuple):
    """One update's rollouts laid out as [time, env]; env columns are ordered by worker, then env index.

    Shapes use T = rollout steps, N = envs in the batch, D = observation size, A = action size.
    """

    obs: Observations
    """[T + 1, N, D] raw observations; row T is the observation after the last step. For a
    layout that is not flat (`prl.envs.observations`), a dict of [T + 1, N, *leaf shape] tensors."""
    actions: torch.Tensor
    """[T, N, A] policy actions (indices as floats for discrete spaces)."""
    logprobs: torch.Tensor
    """[T, N] log-probabilities under the policy that acted."""
    values: torch.Tensor
    """[T + 1, N] critic values; row T bootstraps the unfinished episodes."""
    rewards: torch.Tensor
    """[T, N] rewards as the env returned them."""
    terminated: torch.Tensor
    """[T, N] bool: the episode ended by reaching a terminal state."""
    truncated: torch.Tensor
    """[T, N] bool: the episode was cut short (time limit), and not terminated."""
    final_values: torch.Tensor
    """[T, N] value of the real final observation where truncated, else 0."""
    episode_returns: torch.Tensor
    """[T, N] return of each episode at the step it ended, NaN elsewhere."""
    episode_lengths: torch.Tensor
    """[T, N] length of each episode at the step it ended, NaN elsewhere."""
    policy_versions: torch.Tensor
    """[slots] weight version each rollout was collected with."""
    worker_ids: torch.Tensor
    """[slots] worker that wrote each rollout."""
    env_ids: torch.Tensor
    """[N] global index of the env behind each column (worker * envs_per_worker + index)."""
    initial_states: Optional[torch.Tensor] = None
    """[N, state_size] each env's recurrent state before the rollout's first step (None without a memory)."""
    episode_starts: Optional[torch.Tensor] = None
    """[T, N] bool: observation t begins an episode, where a recurrent state starts afresh (None without a memory)."""
    agent_active: Optional[torch.Tensor] = None
    """[T, N] bool: a PettingZoo env's row acted for a live agent at step t; a dead agent's padding is False
    and is left out of the loss and the step counts (None for a single-agent env)."""
    team_returns: Optional[torch.Tensor] = None
    """[T, N] the sum of every agent's return, at the step a PettingZoo env's episode ended, in the column
    of its first agent; NaN elsewhere (None for a single-agent env)."""
    step_versions: Optional[torch.Tensor] = None
    """[T, N] int64: the weight version that chose each action (with central inference in async mode
    the versions change inside a rollout; None: each rollout's `policy_versions`)."""

    def to(self, device: torch.device | str) -> Batch:
        """This batch with every tensor on `device`."""
        moved: list = [None if field is None else map_obs(lambda tensor: tensor.to(device), field) for field in self]
        return Batch(*moved)

    def finished_episodes(self) -> tuple[list[float], list[int]]:
        """Returns and lengths of the episodes that ended inside this batch, in (time, env) order."""
        ended = ~torch.isnan(self.episode_returns)
        return self.episode_returns[ended].tolist(), [int(n) for n in self.episode_lengths[ended].tolist()]

    def finished_team_returns(self) -> list[float]:
        """A PettingZoo env's team returns of the episodes that ended inside this batch (empty for a single agent)."""
        if self.team_returns is None:
            return []
        return self.team_returns[~torch.isnan(self.team_returns)].tolist()

    @property
    def agent_steps(self) -> int:
        """The steps in this batch that an agent acted in: every row's, less a PettingZoo env's dead agents' padding."""
        if self.agent_active is None:
            return self.rewards.numel()
        return int(self.agent_active.sum())


SHARED_MEMORY = "/dev/shm"
"""Where Linux keeps shared memory; torch's shared tensors take their room there (as unlinked files)."""


def trajectory_bytes(
    num_slots: int,
    rollout_steps: int,
    envs_per_worker: int,
    obs_dim: Union[int, ObsLayout],
    action_dim: int,
    central: bool = False,
    state_size: int = 0,
    agents: bool = False,
) -> int:
    """Bytes of shared memory a `TrajectoryBuffer` with these arguments takes (the sum of its tensors' sizes)."""
    S, T, E, A = num_slots, rollout_steps, envs_per_worker, action_dim
    obs = obs_dim.bytes_per_step if isinstance(obs_dim, ObsLayout) else 4 * obs_dim
    total = obs * S * (T + 1) * E + 4 * S * (T + 1) * E  # observations, values
    total += (
        4 * S * T * E * (A + 6) + 2 * S * T * E
    )  # actions, log-probs, the four float step fields, versions; two flags
    total += 8 * (2 * S + S * E)  # versions, worker ids, env ids
    if central:
        total += obs * S * E + 4 * S * T * E * A  # final observations, action noise
    if state_size:
        total += 4 * S * E * state_size + S * T * E  # initial recurrent states, episode starts
    if agents:
        total += 5 * S * T * E  # agent_active, team_returns
    return total


def check_shared_memory(needed: int, folder: str = SHARED_MEMORY) -> None:
    """Refuse in one sentence, before allocating, `needed` bytes of shared memory that `folder` has no room for.

    Docker gives a container 64 MB of /dev/shm by default, and an allocation beyond it fails
    deep inside torch (or kills a process later with SIGBUS). Where there is no such folder
    (not Linux), nothing is checked.
    """
    if not os.path.isdir(folder):
        return
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ConfigError(
            f"the rollout slots need {needed / 2**20:,.0f} MiB of shared memory but {folder} has only "
            f"{free / 2**20:,.0f} MiB free; give it more room (in Docker: --shm-size=1g, or --ipc=host), or start "
            "a run with fewer --workers, --envs-per-worker or --rollout-steps."
        )


class TrajectoryBuffer:
    """Preallocated shared tensors shaped [slots, rollout_steps (+1 for obs and values), envs_per_worker, ...]."""

    STEP_FIELDS = ("rewards", "terminated", "truncated", "final_values", "episode_returns", "episode_lengths")

    def __init__(
        self,
        num_slots: int,
        rollout_steps: int,
        envs_per_worker: int,
        obs_dim: Union[int, ObsLayout],
        action_dim: int,
        central: bool = False,
        state_size: int = 0,
        agents: bool = False,
    ):
        """`obs_dim` is the size of a flat float observation, or an `ObsLayout` (one tensor per leaf, in its dtype).

        `state_size` above 0 (a recurrent policy's, `prl.nn.recurrent`) adds `initial_states`
        ([slots, envs_per_worker, state_size], each env's state before the rollout) and
        `episode_starts` ([slots, T, envs_per_worker] bool, the observations that begin an episode).

        `central` adds what central inference (`prl.collection.central`) needs: `final_obs`, one observation per
        slot and env ([slots, envs_per_worker, ...]), where a worker leaves a truncated episode's last
        observation, and `noise` ([slots, T, envs_per_worker, action_dim]), the randomness each worker
        draws for its envs' actions from its own seeded stream.

        `agents` (a PettingZoo env's rows, `prl.envs.agents`) adds `agent_active` and `team_returns`
        ([slots, T, envs_per_worker]; see `Batch`).
        """
        self.num_slots, self.rollout_steps, self.envs_per_worker = num_slots, rollout_steps, envs_per_worker
        S, T, E = num_slots, rollout_steps, envs_per_worker
        check_shared_memory(trajectory_bytes(S, T, E, obs_dim, action_dim, central, state_size, agents))

        def floats(*shape: int) -> torch.Tensor:
            return torch.full(shape, UNWRITTEN, dtype=torch.float32).share_memory_()

        self.obs = obs_dim.allocate(S, T + 1, E) if isinstance(obs_dim, ObsLayout) else floats(S, T + 1, E, obs_dim)
        self.final_obs = self.noise = None
        if central:
            self.final_obs = obs_dim.allocate(S, E) if isinstance(obs_dim, ObsLayout) else floats(S, E, obs_dim)
            self.noise = floats(S, T, E, action_dim)
        self.actions = floats(S, T, E, action_dim)
        self.logprobs = floats(S, T, E)
        self.values = floats(S, T + 1, E)
        self.rewards = floats(S, T, E)
        self.terminated = torch.zeros(S, T, E, dtype=torch.bool).share_memory_()
        self.truncated = torch.zeros(S, T, E, dtype=torch.bool).share_memory_()
        self.final_values = floats(S, T, E)
        self.episode_returns = floats(S, T, E)
        self.episode_lengths = floats(S, T, E)
        self.versions = torch.full((S, T, E), -1, dtype=torch.int32).share_memory_()
        self.policy_versions = torch.full((S,), -1, dtype=torch.int64).share_memory_()
        self.worker_ids = torch.full((S,), -1, dtype=torch.int64).share_memory_()
        self.env_ids = torch.full((S, E), -1, dtype=torch.int64).share_memory_()
        self.initial_states = floats(S, E, state_size) if state_size else None
        self.episode_starts = torch.zeros(S, T, E, dtype=torch.bool).share_memory_() if state_size else None
        self.agent_active = torch.zeros(S, T, E, dtype=torch.bool).share_memory_() if agents else None
        self.team_returns = floats(S, T, E) if agents else None

    def numpy_views(self, slot: int) -> dict[str, np.ndarray]:
        """Writable numpy views of one slot, for the worker's step loop (no copies)."""
        names = ("actions", "logprobs", "values", "versions") + self.STEP_FIELDS
        views = {name: getattr(self, name)[slot].numpy() for name in names}
        views["obs"] = map_obs(lambda tensor: tensor[slot].numpy(), self.obs)
        if self.noise is not None:
            views["noise"] = self.noise[slot].numpy()
        if self.initial_states is not None and self.episode_starts is not None:
            views["initial_states"] = self.initial_states[slot].numpy()
            views["episode_starts"] = self.episode_starts[slot].numpy()
        if self.agent_active is not None and self.team_returns is not None:
            views["agent_active"] = self.agent_active[slot].numpy()
            views["team_returns"] = self.team_returns[slot].numpy()
        return views

    def stamp(self, slot: int, worker: int, version: int) -> None:
        """Mark a filled slot with the worker that wrote it, its envs' global ids and the weight version it acted with."""
        self.policy_versions[slot] = version
        self.worker_ids[slot] = worker
        self.env_ids[slot] = torch.arange(self.envs_per_worker) + worker * self.envs_per_worker

    def gather(self, slots: Sequence[int], device: torch.device | str = "cpu") -> Batch:
        """Copy the given slots into one [time, env] batch on `device`."""
        index = torch.as_tensor(list(slots), dtype=torch.long)
        pin = torch.device(device).type == "cuda"

        def merge(tensor: torch.Tensor) -> torch.Tensor:
            picked = tensor.index_select(0, index)  # [W, T, E, ...]
            merged = picked.transpose(0, 1).reshape(picked.shape[1], -1, *picked.shape[3:])
            if pin:
                merged = merged.pin_memory()
            return merged.to(device, non_blocking=pin)

        return Batch(
            obs=map_obs(merge, self.obs),
            actions=merge(self.actions),
            logprobs=merge(self.logprobs),
            values=merge(self.values),
            rewards=merge(self.rewards),
            terminated=merge(self.terminated),
            truncated=merge(self.truncated),
            final_values=merge(self.final_values),
            episode_returns=merge(self.episode_returns),
            episode_lengths=merge(self.episode_lengths),
            policy_versions=self.policy_versions.index_select(0, index).clone(),
            worker_ids=self.worker_ids.index_select(0, index).clone(),
            env_ids=self.env_ids.index_select(0, index).reshape(-1).clone(),
            initial_states=None
            if self.initial_states is None
            else self.initial_states.index_select(0, index).reshape(-1, self.initial_states.shape[-1]).to(device),
            episode_starts=None if self.episode_starts is None else merge(self.episode_starts),
            agent_active=None if self.agent_active is None else merge(self.agent_active),
            team_returns=None if self.team_returns is None else merge(self.team_returns),
            step_versions=merge(self.versions).long(),
        )


def _state_entries(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return list(module.state_dict(keep_vars=True).items())


class SharedWeights:
    """A module's state (parameters and buffers) in shared memory, double-buffered, with a version.

    Version v lives in buffer v % 2, so workers can read version v while the learner writes
    v + 1. There is no lock (a lock would be a named semaphore, which a killed process group
    leaves in /dev/shm); reads are checked instead, as a sequence lock does. `publish` first
    writes the version it is about to write into `begun`, then the buffer, then `version`. A
    reader of version v copies buffer v % 2 and then reads `begun`: only a publish of v + 2 or
    later writes into that buffer, so `begun` below v + 2 proves the copy whole, and otherwise
    the reader copies again, from the newest version (`load_latest`). Each process reads and
    writes these tensors in program order, and x86 and ARM keep a store after the copy's
    stores from being seen before them when the copy ends with a fence, as memcpy's does.

    In the synchronous and overlap modes the pool's protocol orders every access, so no read
    ever needs a second copy: a worker reads the version its slot message names, only after
    that message arrives, and the pool never publishes into a buffer that an in-flight rollout
    reads. In the asynchronous mode workers read the newest version whenever a rollout starts,
    while the learner publishes, and the check is what keeps a read whole.
    """

    def __init__(self, module: nn.Module):
        self.numel = sum(t.numel() for _, t in _state_entries(module))
        self.flat = torch.zeros(2, self.numel, dtype=torch.float32).share_memory_()
        self.version = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        self.begun = torch.full((1,), -1, dtype=torch.int64).share_memory_()
        """The version a publish is writing, or last wrote: set before the buffer is touched."""

    def publish(self, module: nn.Module) -> int:
        """Copy the module's state into the next version's buffer and return that version (0 first)."""
        version = int(self.version.item()) + 1
        self.begun[0] = version
        target = self.flat[version % 2]
        with torch.no_grad():
            offset = 0
            for _, tensor in _state_entries(module):
                n = tensor.numel()
                target[offset : offset + n].copy_(tensor.detach().reshape(-1))
                offset += n
        self.version[0] = version
        return version

    def current_version(self) -> int:
        """The latest published version (-1 before the first publish)."""
        return int(self.version.item())

    def load_into(self, module: nn.Module, held_version: int, version: int) -> int:
        """Copy `version` into `module` unless it already holds it; returns `version`.

        `version` must be the latest or the one before it (the other buffer), and no publish
        may overwrite it while it is read (the pool's protocol in the synchronous modes).
        """
        if version == held_version:
            return held_version
        load_flat_state(module, self.flat[version % 2])
        if int(self.begun.item()) >= version + 2:
            raise RuntimeError(f"weight version {version} was overwritten while it was read; read it with load_latest.")
        return version

    def load_latest(self, module: nn.Module, held_version: int) -> int:
        """Copy the newest published version into `module` (unless it holds it already) and return it.

        Safe while `publish` runs in another process: a copy that a publish may have overwritten
        is made again, from the version that is newest by then.
        """
        while True:
            version = self.current_version()
            if version == held_version:
                return held_version
            load_flat_state(module, self.flat[version % 2])
            if int(self.begun.item()) < version + 2:
                return version


def flat_state(module: nn.Module) -> torch.Tensor:
    """The module's parameters and buffers in one new float32 vector, in `SharedWeights`' order."""
    with torch.no_grad():
        return torch.cat([tensor.detach().reshape(-1).float().cpu() for _, tensor in _state_entries(module)])


def load_flat_state(module: nn.Module, flat: torch.Tensor) -> None:
    """Copy a vector made by `flat_state` (or a `SharedWeights` buffer) into the module, in place."""
    with torch.no_grad():
        offset = 0
        for _, tensor in _state_entries(module):
            n = tensor.numel()
            tensor.copy_(flat[offset : offset + n].view(tensor.shape))
            offset += n
