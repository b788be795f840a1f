"""Acting in workers: a numpy copy of an MLP policy (with its LSTM or GRU), or the torch policy itself for encoders.

A worker acts once per step on a small batch (its envs), where torch spends ~150 us per call
in dispatch overhead whatever the batch size; the same arithmetic in numpy costs a few
microseconds per operation. `NumpyActor` mirrors `ActorCritic` exactly (same normalization,
layers, activations and distributions), and tests check that its log-probabilities and values
agree with the torch policy, so the learner's first ratio is 1.

A recurrent policy on flat observations acts through `NumpyActor` too, with `NumpyCore`, a
numpy copy of its LSTM or GRU step, measured faster on one core than the torch policy
(`benchmarks/actor_speed.py`, docs/performance.md).

Policies with an `ObsEncoder` (images, Dict and Tuple observations) act through `TorchActor`:
the policy itself, in inference mode on one thread, where convolutions outweigh the dispatch
cost. `make_actor` picks one.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch

from prl.envs.observations import ArrayObservations, Observations, map_obs
from prl.envs.spec import CONTINUOUS, DISCRETE
from prl.nn.policy import HALF_LOG_2PI, ActorCritic
from prl.nn.recurrent import RecurrentCore


def _linear_layers(sequential: torch.nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight transposed, bias) of each Linear, as float32 arrays ready for `x @ w + b`."""
    return [
        (module.weight.detach().cpu().numpy().T.copy(), module.bias.detach().cpu().numpy().copy())
        for module in sequential
        if isinstance(module, torch.nn.Linear)
    ]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function without exp's overflow for large negative inputs."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


class NumpyCore:
    """A numpy copy of a `RecurrentCore`'s one step (torch's LSTM and GRU equations, its gate order)."""

    def __init__(self, core: RecurrentCore):
        self.kind = core.kind
        self.hidden_size = core.hidden_size
        self.load(core)

    def load(self, core: RecurrentCore) -> None:
        """Copy the core's current weights."""
        parameters = {name: value.detach().cpu().numpy() for name, value in core.rnn.named_parameters()}
        self.w_ih = parameters["weight_ih_l0"].T.copy()
        self.w_hh = parameters["weight_hh_l0"].T.copy()
        self.b_ih = parameters["bias_ih_l0"].copy()
        self.b_hh = parameters["bias_hh_l0"].copy()

    def step(self, x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(output [B, H], new flat state [B, state_size]) from features [B, F] and a flat state."""
        H = self.hidden_size
        h = state[:, :H]
        inputs = x @ self.w_ih
        inputs += self.b_ih
        recurrent = h @ self.w_hh
        recurrent += self.b_hh
        if self.kind == "lstm":
            gates = inputs + recurrent
            c = _sigmoid(gates[:, H : 2 * H]) * state[:, H:] + _sigmoid(gates[:, :H]) * np.tanh(gates[:, 2 * H : 3 * H])
            h = _sigmoid(gates[:, 3 * H :]) * np.tanh(c)
            return h, np.concatenate([h, c], axis=1)
        reset = _sigmoid(inputs[:, :H] + recurrent[:, :H])
        update = _sigmoid(inputs[:, H : 2 * H] + recurrent[:, H : 2 * H])
        candidate = np.tanh(inputs[:, 2 * H :] + reset * recurrent[:, 2 * H :])
        h = candidate + update * (h - candidate)
        return h, h


class NumpyActor:
    """A numpy copy of an `ActorCritic` that samples actions and computes log-probs and values.

    Call `load(policy)` whenever the torch policy's weights change. Sampling uses the given
    numpy Generator, so a seeded worker is reproducible. A recurrent policy's state lives here,
    one row per env, as in `TorchActor`.
    """

    def __init__(self, policy: ActorCritic, rng: np.random.Generator):
        self.spec = policy.spec
        self.rng = rng
        self.activation = np.tanh if policy.config.activation == "tanh" else (lambda x: np.maximum(x, 0.0, out=x))
        self.splits = np.cumsum(self.spec.action_dims)[:-1] if self.spec.action_kind != CONTINUOUS else None
        self.core = NumpyCore(policy.core) if policy.core is not None else None
        self.state_size = policy.state_size
        self.state: np.ndarray | None = None
        """A recurrent policy's state [envs, state_size] after the last step acted (zeros before the first); None without a memory."""
        self.load(policy)

    def load(self, policy: ActorCritic) -> None:
        """Copy the current weights and normalizer statistics out of `policy`."""
        normalizer = policy.obs_normalizer
        self.normalize = normalizer.enabled
        self.obs_clip = np.float32(normalizer.clip)
        self.obs_mean = normalizer.mean.detach().cpu().numpy().copy()
        self.obs_scale = (1.0 / torch.sqrt(normalizer.var + 1e-8)).detach().cpu().numpy().astype(np.float32)
        self.actor = _linear_layers(policy.actor)
        self.critic = _linear_layers(policy.critic)
        if self.core is not None:
            assert policy.core is not None  # built for a recurrent policy
            self.core.load(policy.core)
        if policy.log_std is not None:
            self.log_std = policy.log_std.detach().cpu().numpy().astype(np.float32)
            self.std = np.exp(self.log_std)

    def _prepare(self, obs: np.ndarray) -> np.ndarray:
        if not self.normalize:
            return obs
        return np.clip((obs - self.obs_mean) * self.obs_scale, -self.obs_clip, self.obs_clip)

    def _mlp(self, layers: list, x: np.ndarray) -> np.ndarray:
        for weight, bias in layers[:-1]:
            x = x @ weight
            x += bias
            x = self.activation(x)
        weight, bias = layers[-1]
        out = x @ weight
        out += bias
        return out

    def _state(self, num_envs: int) -> np.ndarray:
        if self.state is None:
            self.state = np.zeros((num_envs, self.state_size), dtype=np.float32)
        return self.state

    def initial_states(self, num_envs: int) -> np.ndarray:
        """A recurrent policy's state before the next step, [num_envs, state_size] (what a slot stores)."""
        return self._state(num_envs)

    def _remember(self, x: np.ndarray, state: np.ndarray, episode_start) -> tuple[np.ndarray, np.ndarray]:
        """The core's step from `state`, reset to zeros first where `episode_start` says."""
        assert self.core is not None  # asked only of a recurrent policy
        if episode_start is not None and episode_start.any():
            state = np.where(episode_start[:, None], np.float32(0.0), state)
        return self.core.step(x, state)

    def value(self, obs: np.ndarray, episode_start=None, envs=None) -> np.ndarray:
        """Critic values [B] for raw observations [B, obs_dim].

        A recurrent policy values them from the current state of the envs `envs` (every env when
        None), reset where `episode_start` says, and keeps its state as it was.
        """
        x = self._prepare(obs)
        if self.core is not None:
            state = self._state(len(episode_start) if episode_start is not None else len(envs))
            x, _ = self._remember(x, state if envs is None else state[list(envs)], episode_start)
        return self._mlp(self.critic, x)[:, 0]

    def act(self, obs: np.ndarray, episode_start=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample actions for raw observations [B, obs_dim]: (actions [B, action_dim], log-probs [B], values [B]).

        A recurrent policy steps its state (reset first where `episode_start` [B] says)."""
        x = self._prepare(obs)
        if self.core is not None:
            x, self.state = self._remember(x, self._state(len(obs)), episode_start)
        values = self._mlp(self.critic, x)[:, 0]
        out = self._mlp(self.actor, x)
        if self.spec.action_kind == CONTINUOUS:
            noise = self.rng.standard_normal(out.shape, dtype=np.float32)
            actions = out + self.std * noise
            logprob = (-0.5 * noise * noise - self.log_std - HALF_LOG_2PI).sum(axis=1)
            return actions, logprob.astype(np.float32), values
        if self.spec.action_kind == DISCRETE:
            action, logprob = self._sample_categorical(out)
            return action[:, None].astype(np.float32), logprob, values
        assert self.splits is not None  # set for every discrete action space
        parts = [self._sample_categorical(logits) for logits in np.split(out, self.splits, axis=1)]
        actions = np.stack([action for action, _ in parts], axis=1).astype(np.float32)
        # A MultiDiscrete space has at least one head, so the sum is an array, not sum's start value 0.
        return actions, cast(np.ndarray, sum(logprob for _, logprob in parts)), values

    def _sample_categorical(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inverse-CDF sampling from softmax(logits) per row; returns (indices, log-probs)."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        cumulative = np.exp(log_probs).cumsum(axis=1)
        uniform = self.rng.random((logits.shape[0], 1), dtype=np.float32) * cumulative[:, -1:]
        index = np.minimum((cumulative < uniform).sum(axis=1), logits.shape[1] - 1)
        return index, log_probs[np.arange(logits.shape[0]), index]


class TorchActor:
    """Acts with the torch policy itself (on the CPU, in inference mode): the same interface as `NumpyActor`.

    Observations arrive as numpy arrays (a dict of them per leaf) and results leave as numpy
    arrays. Sampling draws from a torch Generator seeded from `rng`, so a seeded worker is
    reproducible.
    """

    def __init__(self, policy: ActorCritic, rng: np.random.Generator):
        self.spec = policy.spec
        self.policy = policy
        self.generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        self.state: torch.Tensor | None = None
        """A recurrent policy's state [envs, state_size] after the last step acted (zeros before the first); None without a memory."""

    def load(self, policy: ActorCritic) -> None:
        """Nothing to copy: the actor reads `policy` itself, whose weights the worker updates in place."""
        self.policy = policy

    @staticmethod
    def _tensors(obs: ArrayObservations) -> Observations:
        return map_obs(torch.from_numpy, obs)

    def _state(self, num_envs: int) -> torch.Tensor:
        if self.state is None:
            assert self.policy.core is not None  # asked only of a recurrent policy
            self.state = self.policy.core.initial_state(num_envs)
        return self.state

    def initial_states(self, num_envs: int) -> np.ndarray:
        """A recurrent policy's state before the next step, [num_envs, state_size] (what a slot stores)."""
        return self._state(num_envs).numpy()

    def value(self, obs: ArrayObservations, episode_start=None, envs=None) -> np.ndarray:
        """Critic values [B] for raw observations (arrays with a leading batch axis).

        A recurrent policy values them from the current state of the envs `envs` (every env when
        None), reset where `episode_start` says, and keeps its state as it was.
        """
        with torch.inference_mode():
            tensors = self._tensors(obs)
            if self.policy.core is None:
                return self.policy.get_value(tensors).numpy()
            state = self._state(len(episode_start) if episode_start is not None else len(envs))
            rows = state if envs is None else state[list(envs)]
            starts = (
                torch.zeros(rows.shape[0], dtype=torch.bool)
                if episode_start is None
                else torch.from_numpy(episode_start)
            )
            return self.policy.value_after(tensors, rows, starts).numpy()

    def act(self, obs: ArrayObservations, episode_start=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample actions for raw observations: (actions [B, action_dim], log-probs [B], values [B]).

        A recurrent policy steps its state (reset first where `episode_start` [B] says)."""
        with torch.inference_mode():
            tensors = self._tensors(obs)
            if self.policy.core is None:
                actions, logprob, _, values = self.policy.get_action_and_value(tensors, generator=self.generator)
            else:
                state = self._state(len(episode_start))
                actions, logprob, values, self.state = self.policy.step(
                    tensors, state, torch.from_numpy(episode_start), generator=self.generator
                )
        return actions.numpy(), logprob.numpy(), values.numpy()


def make_actor(policy: ActorCritic, rng: np.random.Generator):
    """The numpy actor for flat observations (the fast path, with or without a memory), the torch policy for encoders."""
    if policy.encoder is None:
        return NumpyActor(policy, rng)
    return TorchActor(policy, rng)
