"""The worker process: `worker_main`, its body, which builds its envs and serves rollout requests (protocol in `prl.collection.pool`)."""

from __future__ import annotations

import functools
from typing import Optional

from prl.collection.buffers import SharedWeights, TrajectoryBuffer
from prl.collection.central import InferenceClient
from prl.collection.child import Channel, wait_until_readable
from prl.collection.rollout import RolloutCollector, action_rng
from prl.config import PolicyConfig
from prl.envs.factory import EnvFactory
from prl.envs.observations import map_obs
from prl.envs.spec import EnvSpec
from prl.nn.actors import make_actor
from prl.nn.policy import build_policy


def worker_main(
    channel: Channel,
    worker_index: int,
    factory: EnvFactory,
    spec: EnvSpec,
    policy_config: PolicyConfig,
    normalize_obs: bool,
    obs_clip: float,
    buffer: TrajectoryBuffer,
    weights: SharedWeights,
    envs_per_worker: int,
    seed: int,
    incarnation: tuple = (),
    inference_conn=None,
) -> None:
    """The body of a worker process, run by `prl.collection.child.child_main`; follows the protocol in `prl.collection.pool`.

    `incarnation` says which life of the worker this is (`prl.seeding`): a resumed run or a
    replacement worker seeds its envs and actions from a path of its own, so no episode
    stream is replayed. With `inference_conn` (central inference, `prl.collection.central`) the
    worker holds no policy: the server acts for its envs.
    """
    collector: Optional[RolloutCollector] = None
    try:
        policy = actor = client = final_obs = None
        rng = action_rng(seed, worker_index, incarnation)
        if inference_conn is None:
            policy = build_policy(spec, policy_config, normalize_obs, obs_clip)
            held_version = weights.load_into(policy, -1, weights.current_version())
            actor = make_actor(policy, rng)
        else:
            held_version = weights.current_version()
            client = InferenceClient(inference_conn, lambda pipe: wait_until_readable(pipe, channel.parent))
            assert buffer.final_obs is not None  # the pool gives central inference a central buffer
            final_obs = map_obs(lambda tensor: tensor[worker_index].numpy(), buffer.final_obs)
        collector = RolloutCollector(factory, spec, actor, envs_per_worker, seed, worker_index, incarnation)
        channel.send(("ready", worker_index, None))
        while True:
            request = channel.recv()
            if request is None:
                break
            slot, version = request  # version None (async mode): the newest published
            if client is None:
                assert policy is not None and actor is not None  # built above when there is no client
                if version is None:
                    loaded = weights.load_latest(policy, held_version)
                else:
                    loaded = weights.load_into(policy, held_version, version)
                if loaded != held_version:
                    held_version = loaded
                    actor.load(policy)
            views = buffer.numpy_views(slot)
            if client is None:
                rollout = functools.partial(collector.collect, views)
            else:
                rollout = functools.partial(collector.collect_central, views, slot, client, final_obs, rng)
            collector, env_error = collector.attempt(rollout)
            if env_error is not None:  # the slot is not reported; the parent decides what next
                channel.send(("env_error", worker_index, env_error))
                continue
            if client is None:
                views["versions"].fill(held_version)
            else:  # the server wrote the version of each step it acted for
                held_version = int(views["versions"].min())
            buffer.stamp(slot, worker_index, held_version)
            channel.send(("slot", worker_index, slot))
    finally:
        if collector is not None:
            collector.close()
        if inference_conn is not None:
            inference_conn.close()
