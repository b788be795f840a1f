"""Rollouts: a worker's envs, stepped with the policy's actions, filling one trajectory slot.

`RolloutCollector` holds the envs and the step loop. Local workers, Ray actors and tests run it.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional

import numpy as np

from prl import seeding
from prl.collection.central import InferenceClient, InferenceGone, env_groups
from prl.collection.child import ChildError
from prl.envs import agents as env_agents
from prl.envs import masks as env_masks
from prl.envs.factory import EnvFactory, make_rows
from prl.envs.families import game_result
from prl.envs.observations import MASK, MASK_KEY
from prl.envs.spec import CONTINUOUS, EnvSpec, spec_from_spaces, wrong_shape
from prl.errors import ConfigError


class RolloutCollector:
    """A worker's envs, its copy of the policy (`prl.nn.actors`), and the episode state that carries across rollouts."""

    def __init__(
        self,
        factory: EnvFactory,
        spec: EnvSpec,
        actor,
        num_envs: int,
        seed: int,
        worker_index: int,
        incarnation: tuple = (),
        rebuilds: int = 0,
    ):
        """`incarnation` says which life of the worker this is (`prl.seeding`); `rebuilds` counts the
        times its envs were rebuilt after a failure (`rebuilt`): each rebuild seeds its envs afresh."""
        self.spec = spec
        self.actor = actor
        self._recipe = (factory, spec, num_envs, seed, worker_index, incarnation)
        self.rebuilds = rebuilds
        self.alive = np.ones(num_envs, dtype=bool)
        """Which rows act for a live agent (a PettingZoo env's dead agents' rows are padding; `prl.envs.agents`)."""
        self.envs = make_rows(factory, spec, num_envs, alive=self.alive)
        self.groups: list[tuple[int, env_agents.AgentGroup]] = (
            [(first, env_agents.group_of(self.envs[first])) for first in range(0, num_envs, spec.agents or num_envs)]
            if spec.agents
            else []
        )
        """A PettingZoo env's groups of agent rows, each with its first row."""
        env_spec = spec_from_spaces(
            spec.name, self.envs[0].observation_space, self.envs[0].action_space, spec.action_scale
        )
        if (
            env_spec.obs_shape != spec.obs_shape
            or env_spec.obs_layout.signature != spec.obs_layout.signature
            or env_spec.action_dims != spec.action_dims
        ):
            raise ConfigError(
                f"the env built in worker {worker_index} has different spaces from the one probed at start; "
                "make the env callable return the same spaces every time."
            )
        self.layout = spec.obs_layout if not spec.flat_obs else None
        """None for flat observations; else the layout whose leaves each get their own array."""
        self.flat_obs = spec.flat_obs and len(spec.obs_shape) == 1
        first_obs = []
        for index, env in enumerate(self.envs):
            env_seed = seeding.env_seed(seed, worker_index, index, seeding.rebuilt(incarnation, rebuilds))
            env.action_space.seed(env_seed)
            obs, _ = env.reset(seed=env_seed)
            first_obs.append(obs)
        self.obs = self._stack(first_obs)
        self.mask_index = next((i for i, leaf in enumerate(spec.obs_layout.leaves) if leaf.kind == MASK), None)
        """Which leaf of the observation holds the action mask (None without one)."""
        self.episode_length = [0] * num_envs
        if self.mask_index is not None:
            self._check_masks(self.obs[MASK_KEY], range(num_envs))
        self.episode_start = np.ones(num_envs, dtype=bool)
        """Which envs' current observation begins an episode (a recurrent policy resets its state there)."""
        self.episode_return = [0.0] * num_envs

    def _where(self, env: int) -> str:
        """The env `env` of this worker and its step, as an error names them."""
        step = self.episode_length[env]
        return f"{self.spec.name} (env {env} of worker {self._recipe[4]}, at {f'step {step}' if step else 'reset'})"

    def _check_masks(self, masks: np.ndarray, env_indices: range) -> None:
        """Refuse, in a sentence naming the env, this worker and the step, a mask that allows nothing."""
        env_masks.check(masks, self.spec.action_dims, lambda i: self._where(env_indices.start + i))

    def _stack(self, observations: list):
        """Env observations as the actor takes them: [E, D] float32, or a dict of per-leaf arrays."""
        return self.spec.obs_layout.stack(observations)

    def _begin(self, views: dict) -> None:
        """Clear the slot's per-step episode fields and write the carried-over observations as row 0."""
        views["final_values"].fill(0.0)
        views["episode_returns"].fill(math.nan)
        views["episode_lengths"].fill(math.nan)
        if self.groups:
            views["team_returns"].fill(math.nan)
        obs = views["obs"]
        if self.layout is None:
            obs[0] = self.obs
        else:
            for key, leaf_obs in obs.items():
                leaf_obs[0] = self.obs[key]

    def _row(self, views: dict, t: int):
        """Row `t` of the slot's observations: an array, or a dict of per-leaf arrays."""
        obs = views["obs"]
        return obs[t] if self.layout is None else {key: leaf_obs[t] for key, leaf_obs in obs.items()}

    def _finish(self, views: dict) -> None:
        """Keep the last row's observations for the next rollout."""
        steps = views["rewards"].shape[0]
        obs = views["obs"]
        self.obs = (
            obs[steps].copy() if self.layout is None else {key: leaf_obs[steps].copy() for key, leaf_obs in obs.items()}
        )

    def collect(self, views: dict) -> None:
        """Run one rollout, writing every field of the slot behind `views` (see `TrajectoryBuffer`)."""
        self._begin(views)
        steps = views["rewards"].shape[0]
        every_env = range(len(self.envs))
        starts = views.get("episode_starts")
        if starts is not None:
            views["initial_states"][...] = self.actor.initial_states(len(self.envs))
        for t in range(steps):
            if starts is not None:
                starts[t] = self.episode_start
            if self.groups:
                views["agent_active"][t] = self.alive
            actions, views["logprobs"][t], views["values"][t] = self.actor.act(self._row(views, t), self.episode_start)
            views["actions"][t] = actions
            truncated_envs = self._step(views, t, every_env)
            self.episode_start = views["terminated"][t] | views["truncated"][t]
            if truncated_envs:
                indices = [i for i, _ in truncated_envs]
                final_obs = self._stack([o for _, o in truncated_envs])
                views["final_values"][t, indices] = self.actor.value(final_obs, envs=indices)
        self._finish(views)
        views["values"][steps] = self.actor.value(self.obs, self.episode_start)

    def collect_central(
        self, views: dict, slot: int, client: InferenceClient, final_obs, rng: np.random.Generator
    ) -> None:
        """Run one rollout as `collect` does, acting through the inference server (`prl.collection.central`).

        The envs take turns in two groups: while the server computes one group's actions, this
        process steps the other. `final_obs` is this worker's row of the buffer's final
        observations, where truncated envs' last observations wait for their values; `rng` draws
        the randomness of every action (the slot's `noise`).
        """
        self._begin(views)
        steps = views["rewards"].shape[0]
        groups = env_groups(len(self.envs), self.spec.agents)
        noise = views["noise"]
        starts = views.get("episode_starts")  # a recurrent policy's: the server resets states there
        gaussian = self.spec.action_kind == CONTINUOUS

        def request(t: int, group: int) -> None:
            if t < steps:
                envs = slice(groups[group].start, groups[group].stop)
                if starts is not None:
                    starts[t, envs] = self.episode_start[envs]
                if self.groups:
                    views["agent_active"][t, envs] = self.alive[envs]
                rows = noise[t, envs]
                rows[...] = (
                    rng.standard_normal(rows.shape, dtype=np.float32)
                    if gaussian
                    else rng.random(rows.shape, dtype=np.float32)
                )
            client.act(slot, t, group)

        try:
            for group in range(len(groups)):
                request(0, group)
            for t in range(steps):
                for group, envs in enumerate(groups):
                    client.reply()
                    truncated_envs = self._step(views, t, envs)
                    ended = slice(envs.start, envs.stop)
                    self.episode_start[ended] = views["terminated"][t, ended] | views["truncated"][t, ended]
                    if truncated_envs:
                        for i, observation in truncated_envs:
                            self._write_final(final_obs, i, observation)
                        client.final(slot, t, [i for i, _ in truncated_envs])
                    request(t + 1, group)
            for _ in groups:
                client.reply()
        except InferenceGone:
            raise
        except Exception:
            client.drain()  # the server still owes replies for this slot; the next rollout must not read them
            raise
        self._finish(views)

    def _write_final(self, final_obs, env: int, observation) -> None:
        if self.layout is None:
            final_obs[env] = observation
        else:
            for leaf, part in zip(self.layout.leaves, self.layout.split(observation)):
                final_obs[leaf.key][env] = part

    def _step(self, views: dict, t: int, env_indices: range) -> list:
        """Step the envs in `env_indices` with row `t`'s actions and write what they return into the slot.

        Returns (env index, final observation) for each env that was truncated, not terminated:
        its value is still owed to final_values[t].
        """
        obs, actions = views["obs"], views["actions"][t]
        layout, envs, flat_obs, game_scores = self.layout, self.envs, self.flat_obs, self.spec.game_scores
        obs_shape = self.spec.obs_shape
        episode_return, episode_length = self.episode_return, self.episode_length
        episode_returns, episode_lengths = views["episode_returns"], views["episode_lengths"]
        next_obs_row, reward_row, terminated_row, truncated_row = (
            obs[t + 1] if layout is None else [obs[leaf.key][t + 1] for leaf in layout.leaves],
            views["rewards"][t],
            views["terminated"][t],
            views["truncated"][t],
        )
        env_actions = self.spec.to_env_actions(actions[env_indices.start : env_indices.stop])
        if self.groups:
            self._step_groups(views, t, env_indices, env_actions)
        truncated_envs = []
        for i, env_action in zip(env_indices, env_actions):
            next_obs, reward, term, trunc, info = envs[i].step(env_action)
            episode_return[i] += float(reward)
            episode_length[i] += 1
            reward_row[i] = reward
            terminated_row[i] = term
            truncated_row[i] = trunc and not term
            if term or trunc:
                if not term:  # kept before the reset, which some envs do in place
                    truncated_envs.append(
                        (i, self._stack([next_obs])[0] if layout is None else copy.deepcopy(next_obs))
                    )
                if info is env_agents.PADDING:  # a dead agent's row, reset with its env: no episode
                    pass
                elif not game_scores:
                    episode_returns[t, i] = episode_return[i]
                    episode_lengths[t, i] = episode_length[i]
                elif (game := game_result(info)) is not None:  # a life lost is not a game over
                    episode_returns[t, i], episode_lengths[t, i] = game
                episode_return[i] = 0.0
                episode_length[i] = 0
                next_obs, _ = envs[i].reset()
            # Every observation is checked, not only the first: numpy would broadcast a (1,) array
            # into a (4,) row without a word.
            if layout is None:
                if getattr(next_obs, "shape", None) != obs_shape and np.shape(next_obs) != obs_shape:
                    raise wrong_shape(f"{self.spec.name} (env {i} of this worker)", np.shape(next_obs), obs_shape)
                next_obs_row[i] = next_obs if flat_obs else np.asarray(next_obs).reshape(-1)
            else:
                leaves = layout.split(next_obs)
                layout.check(leaves, self._where(i))
                for leaf_row, leaf_obs in zip(next_obs_row, leaves):
                    leaf_row[i] = leaf_obs
        rows = slice(env_indices.start, env_indices.stop)
        if self.mask_index is not None:
            self._check_masks(next_obs_row[self.mask_index][rows], env_indices)
        finite = (
            np.isfinite(next_obs_row[rows]).all() if layout is None else self._finite_rows(next_obs_row, rows).all()
        )
        if not (finite and np.isfinite(reward_row[rows]).all()):
            good = self._finite_rows(next_obs_row, rows) & np.isfinite(reward_row[rows])
            bad = env_indices.start + int(np.flatnonzero(~good)[0])
            what = "reward" if not np.isfinite(reward_row[bad]) else "observation"
            raise NonFiniteData(
                f"{self.spec.name} (env {bad} of this worker) returned a non-finite {what} "
                f"at step {episode_length[bad] or 'reset'} of its episode"
            )
        return truncated_envs

    def _step_groups(self, views: dict, t: int, env_indices: range, env_actions: list) -> None:
        """Step each PettingZoo env among `env_indices` once with its agents' actions, and keep the team
        returns of the episodes that end (the rows then read their shares, `prl.envs.agents`)."""
        agents = self.spec.agents
        for first, group in self.groups[env_indices.start // agents : env_indices.stop // agents]:
            offset = first - env_indices.start
            group.step(env_actions[offset : offset + agents])
            if group.finished_team_return is not None:
                views["team_returns"][t, first] = group.finished_team_return

    def _finite_rows(self, next_obs_row, rows: slice) -> np.ndarray:
        """Bool per env in `rows`: its new observation is finite (integer and image leaves always are)."""
        if self.layout is None:
            return np.isfinite(next_obs_row[rows]).all(axis=1)
        count = len(range(*rows.indices(len(self.envs))))
        finite = np.ones(count, dtype=bool)
        for leaf_row in next_obs_row:
            if leaf_row.dtype.kind == "f":
                finite &= np.isfinite(leaf_row[rows].reshape(count, -1)).all(axis=1)
        return finite

    def attempt(self, rollout: Callable[[], None]) -> tuple[RolloutCollector, Optional[ChildError]]:
        """Run `rollout` (one of this collector's): (self, None) when it completes; when an env failed in
        it, these envs are closed and rebuilt with fresh seeds, and (the new collector, the env's error)
        is returned. The slot it was writing is then not to be reported: its data is never learned from.

        Only an env's bad luck is retried. A ConfigError (the env breaks its own declared spaces),
        InferenceGone (the inference server stopped) and a failure to rebuild are raised.
        """
        try:
            rollout()
        except (InferenceGone, ConfigError):
            raise
        except Exception as error:
            return self.rebuilt(), ChildError.of(error)
        return self, None

    def rebuilt(self) -> RolloutCollector:
        """Close these envs and return a collector with new ones, seeded afresh (after an env failed mid-rollout)."""
        self.close()
        factory, spec, num_envs, seed, worker_index, incarnation = self._recipe
        return RolloutCollector(factory, spec, self.actor, num_envs, seed, worker_index, incarnation, self.rebuilds + 1)

    def close(self) -> None:
        """Close every env, ignoring errors from envs that are already broken."""
        for env in self.envs:
            try:
                env.close()
            except Exception:
                pass


class NonFiniteData(Exception):
    """An env returned a NaN or infinite observation or reward; the message names the env and step."""


def action_rng(seed: int, worker_index: int, incarnation: tuple = ()) -> np.random.Generator:
    """The generator a worker draws its actions' randomness from, in either inference mode."""
    return np.random.default_rng(seeding.action_seed(seed, worker_index, incarnation))
