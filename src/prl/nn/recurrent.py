"""The recurrent core of a memory policy: an LSTM or GRU whose state resets where an episode starts.

A core's state is one flat tensor per env, [N, state_size] (an LSTM's h and c side by side, a
GRU's h), so that it can live in a shared-memory slot like any other field. The same core runs
two ways:
- `step`: one time step for N envs, as an actor does while it collects;
- `replay`: a whole rollout [T, N] from the state it started with, as the learner does, in as
  few calls of the underlying torch module as the episode starts allow (one call per run of
  steps in which no env starts an episode).
Both reset an env's state to zeros at a step flagged as an episode start, before that step's
input is read, so that replaying a rollout computes what acting computed.
"""

from __future__ import annotations

import torch
from torch import nn

KINDS = ("lstm", "gru")
"""The recurrent cores prl builds."""


class RecurrentCore(nn.Module):
    """A one-layer LSTM or GRU over feature vectors, with its state as one flat tensor per env.

    Args:
        kind: "lstm" or "gru".
        input_size: width of the features it reads.
        hidden_size: width of its output (and of each part of its state).
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"a recurrent core is lstm or gru, got {kind!r}")
        self.kind = kind
        self.hidden_size = hidden_size
        self.rnn: nn.LSTM | nn.GRU = (nn.LSTM if kind == "lstm" else nn.GRU)(input_size, hidden_size)
        for name, parameter in self.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(parameter)  # as CleanRL's ppo_atari_lstm initializes its LSTM
            else:
                nn.init.zeros_(parameter)

    @property
    def state_size(self) -> int:
        """Width of one env's flat state: 2 x hidden_size for an LSTM (h, c), hidden_size for a GRU."""
        return 2 * self.hidden_size if self.kind == "lstm" else self.hidden_size

    def initial_state(self, num_envs: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The state of envs that have seen nothing yet: zeros [num_envs, state_size]."""
        return torch.zeros(num_envs, self.state_size, device=device)

    def _unpack(self, state: torch.Tensor):
        """The torch module's state ([1, N, H], or a pair of them) from a flat [N, state_size] state."""
        if self.kind == "gru":
            return state[None].contiguous()
        h, c = state.split(self.hidden_size, dim=-1)
        return h[None].contiguous(), c[None].contiguous()

    def _pack(self, module_state) -> torch.Tensor:
        """The flat [N, state_size] state from the torch module's."""
        if self.kind == "gru":
            return module_state[0]
        h, c = module_state
        return torch.cat([h[0], c[0]], dim=-1)

    def step(
        self, features: torch.Tensor, state: torch.Tensor, episode_start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: (output [N, hidden_size], new state [N, state_size]) from features [N, F].

        `episode_start` [N] (bool) marks envs whose observation is the first of an episode: their
        state is reset to zeros first.
        """
        output, new_state = self.replay(features[None], state, episode_start[None])
        return output[0], new_state

    def replay(
        self, features: torch.Tensor, state: torch.Tensor, episode_starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A whole sequence: (outputs [T, N, hidden_size], state after it [N, state_size]).

        `features` [T, N, F] are each step's inputs, `state` [N, state_size] the state before
        step 0, and `episode_starts` [T, N] (bool) the steps whose observation starts an episode,
        where that env's state is reset to zeros before the step.
        """
        steps = features.shape[0]
        any_start = episode_starts.any(dim=1).tolist()
        keep = (~episode_starts).to(state.dtype).unsqueeze(-1)  # [T, N, 1]: 0 where a state resets
        outputs = []
        begin = 0
        while begin < steps:
            end = begin + 1
            while end < steps and not any_start[end]:
                end += 1
            if any_start[begin]:
                state = state * keep[begin]
            output, module_state = self.rnn(features[begin:end], self._unpack(state))
            state = self._pack(module_state)
            outputs.append(output)
            begin = end
        return torch.cat(outputs), state
