"""The worker process: `worker_main`, the entry point that serves rollout requests (protocol in `prl.collection.pool`)."""

from __future__ import annotations

import signal
import traceback
from typing import Optional

import psutil

from prl.collection.buffers import SharedWeights, TrajectoryBuffer
from prl.collection.central import InferenceClient, InferenceGone
from prl.collection.child import ParentGone, use_one_thread, wait_for_message, wait_until_readable
from prl.collection.rollout import RolloutCollector, action_rng
from prl.config import PolicyConfig
from prl.envs.factory import EnvFactory
from prl.envs.observations import map_obs
from prl.envs.spec import EnvSpec
from prl.nn.actors import make_actor
from prl.nn.policy import build_policy


def worker_main(
    worker_index: int,
    conn,
    parent_pid: int,
    factory: EnvFactory,
    spec: EnvSpec,
    policy_config: PolicyConfig,
    normalize_obs: bool,
    obs_clip: float,
    buffer: TrajectoryBuffer,
    weights: SharedWeights,
    envs_per_worker: int,
    seed: int,
    seed_path: tuple = (),
    inference_conn=None,
) -> None:
    """Entry point of a worker process; follows the protocol written in `prl.collection.pool`.

    `seed_path` is mixed into every seed: empty for a fresh run's first workers, so their
    seeds depend on (seed, worker, env) alone; a resumed run or a replacement worker passes
    its own path, so no episode stream is replayed. With `inference_conn` (central inference,
    `prl.collection.central`) the worker holds no policy: the server acts for its envs.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    use_one_thread()
    collector: Optional[RolloutCollector] = None
    try:
        parent = psutil.Process(parent_pid)
        policy = actor = client = final_obs = None
        rng = action_rng(seed, worker_index, seed_path)
        if inference_conn is None:
            policy = build_policy(spec, policy_config, normalize_obs, obs_clip)
            held_version = weights.load_into(policy, -1, weights.current_version())
            actor = make_actor(policy, rng)
        else:
            held_version = weights.current_version()
            client = InferenceClient(inference_conn, lambda pipe: wait_until_readable(pipe, parent))
            final_obs = map_obs(lambda tensor: tensor[worker_index].numpy(), buffer.final_obs)
        collector = RolloutCollector(factory, spec, actor, envs_per_worker, seed, worker_index, seed_path)
        conn.send(("ready", worker_index, None))
        while True:
            request = wait_for_message(conn, parent)
            if request is None:
                break
            slot, version = request
            if client is not None:
                held_version = version  # the server acts with it
            elif version != held_version:
                held_version = weights.load_into(policy, held_version, version)
                actor.load(policy)
            try:
                if client is None:
                    collector.collect(buffer.numpy_views(slot))
                else:
                    collector.collect_central(buffer.numpy_views(slot), slot, client, final_obs, rng)
            except InferenceGone:
                raise
            except Exception as error:
                # The env failed mid-rollout: the slot is not reported (its data is never learned
                # from), the envs are rebuilt with fresh seeds, and the parent decides what next.
                conn.send(("env_error", worker_index, (type(error).__name__, str(error), traceback.format_exc())))
                failed, collector = collector, None
                collector = failed.rebuilt()
                continue
            buffer.stamp(slot, worker_index, held_version)
            conn.send(("slot", worker_index, slot))
    except ParentGone:
        pass
    except BaseException as error:
        try:
            conn.send(("error", worker_index, (type(error).__name__, str(error), traceback.format_exc())))
        except (OSError, EOFError):
            pass
    finally:
        if collector is not None:
            collector.close()
        conn.close()
        if inference_conn is not None:
            inference_conn.close()
