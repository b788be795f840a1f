"""The actor-critic policy: separate actor and critic MLPs over (optionally normalized) observations.

For a flat observation the MLPs read the normalized vector itself. For images, Dict and Tuple
observations (`prl.envs.observations`), a shared `ObsEncoder` (`prl.nn.encoders`) turns the leaves into
one feature vector first, and the actor and critic MLPs read that.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, cast

import numpy as np
import torch
from torch import nn

from prl.config import PolicyConfig
from prl.envs.observations import MASK_KEY, Observations
from prl.envs.presets import normalizes_observations
from prl.envs.spec import CONTINUOUS, DISCRETE, EnvSpec
from prl.nn.encoders import ObsEncoder, vector_size
from prl.nn.normalize import ObsNormalizer
from prl.nn.recurrent import RecurrentCore

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
"""log(sqrt(2 pi)), the constant term of a Gaussian log-density."""

MASKED_LOGIT = -1e9
"""The logit an illegal action gets: its probability is exactly 0 in float32 (so it is never
sampled and adds nothing to the entropy), and no legal action's logit comes near it."""


def layer_init(layer: nn.Linear, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights with gain `std` and constant bias, as in the PPO implementation details."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_size: int, hidden_sizes: Tuple[int, ...], out_size: int, activation: str, out_std: float) -> nn.Sequential:
    """An MLP with orthogonally initialized layers and the given hidden activation."""
    act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_size, size)), act()]
        in_size = size
    layers.append(layer_init(nn.Linear(in_size, out_size), std=out_std))
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    """Actor and critic MLPs for Discrete, MultiDiscrete and Box action spaces.

    Continuous actions come from a Gaussian with a state-independent log-std; `EnvSpec`
    maps them onto the env's bounds. Discrete actions are stored as floats holding indices.
    """

    log_std: Optional[nn.Parameter]
    """The Gaussian's log-std for continuous actions; None for discrete ones."""

    def __init__(self, spec: EnvSpec, config: PolicyConfig, normalize_obs: bool = False, obs_clip: float = 10.0):
        super().__init__()
        self.spec = spec
        self.config = config
        self.encoder: Optional[ObsEncoder] = None
        if spec.flat_obs:
            obs_dim = spec.obs_dim
            self.obs_normalizer = ObsNormalizer(obs_dim, obs_clip, normalize_obs)
        else:
            self.obs_normalizer = ObsNormalizer(vector_size(spec.obs_layout), obs_clip, normalize_obs)
            self.encoder = ObsEncoder(spec.obs_layout, config.encoder)
            obs_dim = self.encoder.out_size
        self.core: Optional[RecurrentCore] = None
        """The memory between the features and the heads (`prl.nn.recurrent`), shared by actor and critic; None without."""
        if config.recurrent is not None:
            self.core = RecurrentCore(config.recurrent, obs_dim, config.recurrent_size)
            obs_dim = config.recurrent_size
        self.critic = mlp(obs_dim, config.hidden_sizes, 1, config.activation, out_std=1.0)
        if spec.action_kind == CONTINUOUS:
            self.actor = mlp(obs_dim, config.hidden_sizes, spec.action_dim, config.activation, out_std=0.01)
            self.log_std = nn.Parameter(torch.full((spec.action_dim,), float(config.log_std_init)))
        else:
            self.actor = mlp(obs_dim, config.hidden_sizes, int(sum(spec.action_dims)), config.activation, out_std=0.01)
            self.log_std = None

    @property
    def device(self) -> torch.device:
        """Where the policy's weights are (a pool's central inference runs there)."""
        return next(self.critic.parameters()).device

    def prepare(self, obs: Observations) -> Observations:
        """The networks' input for raw observations: normalized vectors, or the leaves as they are.

        Depends only on the normalizer's statistics, which stay fixed during an update, so the
        learner prepares a whole batch once. `score` takes what this returns.
        """
        return self.obs_normalizer(obs) if self.encoder is None else obs

    def features(self, inputs: Observations) -> torch.Tensor:
        """What the actor and critic MLPs read [B, F], from `prepare`'s output."""
        if self.encoder is None:
            assert isinstance(inputs, torch.Tensor)  # the flat layout: one tensor
            return inputs
        return self.encoder(inputs, self.obs_normalizer)

    @torch.no_grad()
    def update_normalizer(self, obs: Observations) -> None:
        """Merge a batch of raw observations (flattened over [time, env]) into the normalizer."""
        if self.encoder is None:
            assert isinstance(obs, torch.Tensor)  # the flat layout: one tensor
            self.obs_normalizer.update(obs)
        elif self.encoder.vector_keys:
            assert isinstance(obs, dict)  # an encoder's layout: a dict of leaves
            self.obs_normalizer.update(self.encoder.vectors(obs))

    def _stateless(self) -> None:
        if self.core is not None:
            raise ValueError("a recurrent policy acts with step(obs, state, episode_start), which carries its state.")

    def get_value(self, obs: Observations) -> torch.Tensor:
        """Critic's value estimate, shape [B]."""
        self._stateless()
        return self.critic(self.features(self.prepare(obs))).squeeze(-1)

    def _mask(self, inputs: Observations) -> Optional[torch.Tensor]:
        """The action mask [B, sum(action_dims)] (bool) in a batch of inputs, or None without one."""
        if not self.spec.masked:
            return None
        assert isinstance(inputs, dict)  # a mask is a leaf of a Dict layout
        return inputs[MASK_KEY]

    def _heads(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """Log-probabilities of each categorical head [B, n_i], or the Gaussian mean [B, d] alone.

        Where `mask` [B, sum(n_i)] is False, the logit is MASKED_LOGIT: illegal actions get
        probability 0, and the legal ones share all of it.
        """
        out = self.actor(x)
        if self.spec.action_kind == CONTINUOUS:
            return [out]
        if mask is not None:
            out = out.masked_fill(~mask.bool(), MASKED_LOGIT)
        if self.spec.action_kind == DISCRETE:
            return [out.log_softmax(-1)]
        return [logits.log_softmax(-1) for logits in torch.split(out, list(self.spec.action_dims), dim=-1)]

    def _choose(
        self,
        heads: list[torch.Tensor],
        deterministic: bool,
        generator: Optional[torch.Generator] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if not deterministic:
            return self._sample(heads, generator) if noise is None else self._sample_with(heads, noise)
        if self.spec.action_kind == CONTINUOUS:
            return heads[0]
        return torch.stack([log_probs.argmax(-1) for log_probs in heads], dim=-1).to(torch.float32)

    def _sample(self, heads: list[torch.Tensor], generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Actions drawn from the distribution `heads` describe, with `generator` when given."""
        if self.spec.action_kind == CONTINUOUS:
            assert self.log_std is not None  # continuous actions have one
            mean = heads[0]
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            return mean + self.log_std.exp() * noise
        parts = [torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1) for log_probs in heads]
        return torch.stack(parts, dim=-1).to(torch.float32)

    def _sample_with(self, heads: list[torch.Tensor], noise: torch.Tensor) -> torch.Tensor:
        """Actions drawn with given randomness [B, action_dim]: standard normals for a Gaussian,
        uniforms in [0, 1) for categorical heads (inverse CDF, as `prl.nn.actors.NumpyActor` draws)."""
        if self.spec.action_kind == CONTINUOUS:
            assert self.log_std is not None  # continuous actions have one
            return heads[0] + self.log_std.exp() * noise
        parts = []
        for i, log_probs in enumerate(heads):
            cumulative = log_probs.exp().cumsum(-1)
            threshold = noise[:, i : i + 1] * cumulative[:, -1:]
            parts.append((cumulative < threshold).sum(-1).clamp(max=log_probs.shape[-1] - 1))
        return torch.stack(parts, dim=-1).to(torch.float32)

    def _score(self, heads: list[torch.Tensor], action: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Log-probability and entropy of `action` [B, action_dim], summed over dimensions or heads.

        Written out rather than through torch.distributions: the learner calls this for every
        minibatch, and the distribution objects add a large share of its per-step overhead.
        """
        if self.spec.action_kind == CONTINUOUS:
            assert self.log_std is not None  # continuous actions have one
            log_std = self.log_std.expand_as(heads[0])
            z = (action - heads[0]) / log_std.exp()
            logprob = (-0.5 * z * z - log_std - HALF_LOG_2PI).sum(-1)
            return logprob, (0.5 + HALF_LOG_2PI + log_std).sum(-1)
        indices = action.long()
        # `heads` is never empty, so each sum is a tensor, not sum's start value 0.
        logprob = cast(
            torch.Tensor,
            sum(log_probs.gather(-1, indices[:, i : i + 1]).squeeze(-1) for i, log_probs in enumerate(heads)),
        )
        entropy = cast(torch.Tensor, sum(-(log_probs.exp() * log_probs).sum(-1) for log_probs in heads))
        return logprob, entropy

    def get_action_and_value(
        self,
        obs: Observations,
        action: Optional[torch.Tensor] = None,
        deterministic: bool = False,
        generator: Optional[torch.Generator] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample (or score the given) actions: returns action [B, action_dim], log-prob [B], entropy [B], value [B].

        `generator` draws the samples (torch's global generator when None); `noise` [B, action_dim]
        gives the randomness instead (see `_sample_with`), so that each row's action depends only
        on its own observation and noise.
        """
        self._stateless()
        inputs = self.prepare(obs)
        x = self.features(inputs)
        heads = self._heads(x, self._mask(inputs))
        if action is None:
            action = self._choose(heads, deterministic, generator, noise)
        logprob, entropy = self._score(heads, action)
        return action, logprob, entropy, self.critic(x).squeeze(-1)

    def score(
        self,
        inputs: Observations,
        action: torch.Tensor,
        initial_state: Optional[torch.Tensor] = None,
        episode_starts: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-prob [B], entropy [B] and value [B] of `action` given network inputs (`prepare`'s output).

        A recurrent policy scores whole sequences: the B samples are T steps of n envs, in time-major
        order (B = T x n), replayed from `initial_state` [n, state_size] with `episode_starts` [T, n].
        """
        x = self.features(inputs)
        if self.core is not None:
            assert initial_state is not None and episode_starts is not None  # a recurrent policy scores sequences
            steps, envs = episode_starts.shape
            x, _ = self.core.replay(x.reshape(steps, envs, -1), initial_state, episode_starts)
            x = x.reshape(steps * envs, -1)
        logprob, entropy = self._score(self._heads(x, self._mask(inputs)), action)
        return logprob, entropy, self.critic(x).squeeze(-1)

    @property
    def state_size(self) -> int:
        """Width of one env's recurrent state (0 without a memory)."""
        return self.core.state_size if self.core is not None else 0

    def step(
        self,
        obs: Observations,
        state: torch.Tensor,
        episode_start: torch.Tensor,
        deterministic: bool = False,
        generator: Optional[torch.Generator] = None,
        noise: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A recurrent policy's one step for B envs: (action [B, A], log-prob [B], value [B], new state [B, S]).

        `episode_start` [B] (bool) marks observations that begin an episode: their state starts from zeros.
        `generator` and `noise` choose the samples as in `get_action_and_value`.
        """
        assert self.core is not None  # only a recurrent policy carries a state
        inputs = self.prepare(obs)
        x, state = self.core.step(self.features(inputs), state, episode_start)
        heads = self._heads(x, self._mask(inputs))
        action = self._choose(heads, deterministic, generator, noise)
        logprob, _ = self._score(heads, action)
        return action, logprob, self.critic(x).squeeze(-1), state

    def value_after(self, obs: Observations, state: torch.Tensor, episode_start: torch.Tensor) -> torch.Tensor:
        """A recurrent policy's value [B] of `obs` seen from `state`, without acting or keeping the new state
        (the bootstrap value after a rollout, or a truncated episode's final observation)."""
        assert self.core is not None  # only a recurrent policy carries a state
        x, _ = self.core.step(self.features(self.prepare(obs)), state, episode_start)
        return self.critic(x).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: Observations, deterministic: bool = True) -> torch.Tensor:
        """Actions only, for evaluation: the mean or most likely action when deterministic."""
        self._stateless()
        inputs = self.prepare(obs)
        return self._choose(self._heads(self.features(inputs), self._mask(inputs)), deterministic)


def build_policy(spec: EnvSpec, policy: PolicyConfig, normalize_obs: Optional[bool], obs_clip: float) -> ActorCritic:
    """The one place a policy is constructed, so learner and workers build identical networks.

    `normalize_obs` None leaves the choice to the env's observation bounds (`prl.envs.presets`).
    """
    return ActorCritic(spec, policy, normalize_obs=normalizes_observations(normalize_obs, spec), obs_clip=obs_clip)


def place_policy(policy: ActorCritic, device: torch.device) -> ActorCritic:
    """`policy` moved to `device`, where its encoder's convolutions compute in float32, as on the CPU.

    CUDA runs convolutions in TF32 by default, for this whole process: the learner's and an
    inference server's log-probabilities would drift from the float32 ones the actions were
    drawn with (by a worker on the CPU, or by the server), and the first ratio off 1. (Matrix
    products already default to float32.)
    """
    if device.type == "cuda" and policy.encoder is not None:
        torch.backends.cudnn.allow_tf32 = False
    return policy.to(device)
