"""Shared buffers: data written by another process arrives intact, and weights round-trip."""

import multiprocessing
import threading

import pytest
import torch
from torch import nn

from prl.collection.buffers import SharedWeights, TrajectoryBuffer, trajectory_bytes


def write_pattern(buffer: TrajectoryBuffer, slot: int) -> None:
    """Runs in a child process: fill one slot with values derived from their positions."""
    views = buffer.numpy_views(slot)
    for array in views.values():
        array[...] = (torch.arange(array.size).reshape(array.shape) % 7 + slot).numpy()
    buffer.policy_versions[slot] = 40 + slot
    buffer.worker_ids[slot] = slot
    buffer.env_ids[slot] = torch.arange(buffer.envs_per_worker) + slot * buffer.envs_per_worker


def test_slots_start_unwritten_and_round_trip_from_a_child_process(no_leaks):
    buffer = TrajectoryBuffer(num_slots=3, rollout_steps=4, envs_per_worker=2, obs_dim=5, action_dim=1)
    assert torch.isnan(buffer.obs).all() and torch.isnan(buffer.rewards).all()
    assert (buffer.policy_versions == -1).all()
    context = multiprocessing.get_context("spawn")
    for slot in (2, 0):
        process = context.Process(target=write_pattern, args=(buffer, slot))
        process.start()
        process.join(timeout=60)
        assert process.exitcode == 0
    assert torch.isnan(buffer.obs[1]).all(), "a slot nobody wrote must keep its sentinel"

    batch = buffer.gather([2, 0])
    assert batch.obs.shape == (5, 4, 5) and batch.rewards.shape == (4, 4) and batch.values.shape == (5, 4)
    # Columns 0-1 come from slot 2, columns 2-3 from slot 0.
    expected_obs_slot2 = (torch.arange(5 * 2 * 5).reshape(5, 2, 5) % 7 + 2).float()
    assert torch.equal(batch.obs[:, :2], expected_obs_slot2)
    assert torch.equal(batch.obs[:, 2:], expected_obs_slot2 - 2)
    assert batch.policy_versions.tolist() == [42, 40]
    assert batch.env_ids.tolist() == [4, 5, 0, 1]
    assert not torch.isnan(batch.rewards).any()


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4)
        self.second = nn.Linear(4, 2)
        self.register_buffer("stat", torch.zeros(2, dtype=torch.float64))


def test_weights_publish_and_load_by_version():
    source, target = TwoLayers(), TwoLayers()
    source.stat.fill_(3.0)
    weights = SharedWeights(source)
    assert weights.current_version() == -1
    assert weights.publish(source) == 0
    assert weights.load_into(target, -1, 0) == 0
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert torch.equal(a.float(), b.float()), name

    with torch.no_grad():
        target.first.weight.zero_()
    assert weights.load_into(target, 0, 0) == 0
    assert (target.first.weight == 0).all(), "a version already held must not be copied again"

    version_zero = source.first.weight.detach().clone()
    with torch.no_grad():
        source.first.weight.add_(1.0)
    assert weights.publish(source) == 1
    assert weights.load_into(target, 0, 0) == 0 and (target.first.weight == 0).all()
    assert weights.load_into(target, -1, 0) == 0
    assert torch.equal(target.first.weight, version_zero), "version 0 must still be readable after version 1"
    assert weights.load_into(target, 0, 1) == 1
    assert torch.equal(target.first.weight, source.first.weight)


class Filled(nn.Module):
    """One large parameter, every entry set to the same number, so a read that mixes two versions shows."""

    def __init__(self, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(size), requires_grad=False)


def test_latest_weights_are_read_whole_while_a_publisher_keeps_writing():
    source, reader = Filled(1 << 18), Filled(1 << 18)
    weights = SharedWeights(source)
    weights.publish(source)
    stop = threading.Event()

    def keep_publishing():
        version = 0
        while not stop.is_set():
            version += 1
            source.weight.fill_(float(version))
            weights.publish(source)

    publisher = threading.Thread(target=keep_publishing)  # torch's copies release the GIL, so the two overlap
    publisher.start()
    try:
        held, seen = -1, set()
        for _ in range(200):
            held = weights.load_latest(reader, held)
            values = reader.weight.unique()
            assert values.tolist() == [float(held)], f"version {held} was read half old, half new: {values[:4]}"
            seen.add(held)
            held = -1  # read again each time
    finally:
        stop.set()
        publisher.join()
    assert len(seen) > 10, "the reads should have come while the publisher was writing new versions"
    assert weights.load_latest(reader, weights.current_version()) == weights.current_version()


def test_a_named_version_overwritten_during_its_read_is_refused():
    source, target = TwoLayers(), TwoLayers()
    weights = SharedWeights(source)
    for _ in range(3):
        weights.publish(source)  # versions 0, 1, 2: version 0's buffer now holds version 2
    with pytest.raises(RuntimeError, match="overwritten"):
        weights.load_into(target, -1, 0)
    assert weights.load_into(target, -1, 2) == 2


def test_the_shared_memory_figure_is_what_the_buffer_allocates():
    import gymnasium as gym

    from prl.envs.observations import ObsLayout

    images = ObsLayout.from_space(
        gym.spaces.Dict({"frame": gym.spaces.Box(0, 255, (4, 21, 21), "uint8"), "speed": gym.spaces.Box(-1, 1, (3,))})
    )
    for obs_dim in (4, images):
        for central in (False, True):
            buffer = TrajectoryBuffer(3, 5, 2, obs_dim, 2, central=central)
            allocated = sum(
                tensor.nbytes
                for value in vars(buffer).values()
                for tensor in (value.values() if isinstance(value, dict) else [value])
                if isinstance(tensor, torch.Tensor)
            )
            assert trajectory_bytes(3, 5, 2, obs_dim, 2, central) == allocated, (obs_dim, central)


def test_a_run_that_needs_more_shared_memory_than_there_is_is_refused_in_one_sentence(tmp_path, monkeypatch, capsys):
    import shutil

    from prl.collection import buffers
    from prl.run.cli import main

    real_usage = shutil.disk_usage
    docker_default = 64 * 2**20

    def small_shm(path):
        usage = real_usage(path)
        return usage._replace(free=docker_default) if str(path) == buffers.SHARED_MEMORY else usage

    monkeypatch.setattr(buffers.shutil, "disk_usage", small_shm)
    out = tmp_path / "run"
    args = ["--env", "ALE/Breakout-v5", "--workers", "8", "--envs-per-worker", "8", "--rollout-steps", "128"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "the rollout slots need 222 MiB of shared memory but /dev/shm has only 64 MiB free" in error
    assert "--shm-size=1g, or --ipc=host" in error
    assert not out.exists(), "no half-made run folder"
