"""One update's loss inputs by name: `Minibatch`, and `Samples`, which gathers any minibatch of them at once.

The learner reads every loss input by name (CleanRL's `b_obs`, `b_logprobs`, ...). `Samples`
stores the float inputs side by side in one `[B, columns]` tensor, so that a minibatch is one
gather instead of one per input (a gradient step of a small MLP on a CPU costs a few hundred
microseconds, and each indexing call about five), and hands them back as views by name. A new
loss input is one field of `Minibatch`; nothing reads a column by its position.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from prl.envs.observations import Observations


class Minibatch(NamedTuple):
    """The per-sample inputs of the loss, each with the samples along its first axis ([M, ...])."""

    obs: Observations
    """The networks' input: normalized flat observations [M, D], or a dict of raw leaves [M, *leaf shape]."""
    actions: torch.Tensor
    """[M, A] the actions taken (indices as floats for discrete spaces)."""
    logprobs: torch.Tensor
    """[M] their log-probabilities under the policy that acted."""
    values: torch.Tensor
    """[M] the critic's values when the batch was collected."""
    advantages: torch.Tensor
    """[M] GAE advantages (with RND: the mix of extrinsic and intrinsic ones)."""
    returns: torch.Tensor
    """[M] extrinsic returns, the critic's targets."""
    int_returns: Optional[torch.Tensor] = None
    """[M] RND's intrinsic returns, the intrinsic critic's targets (None without RND)."""
    next_obs: Optional[torch.Tensor] = None
    """[M, D] the raw observations after each step, RND's predictor's input (None without RND)."""
    episode_starts: Optional[torch.Tensor] = None
    """[M] 1.0 where the observation begins an episode, for a recurrent policy's replay (None without one)."""
    weights: Optional[torch.Tensor] = None
    """[M] 1.0 where a PettingZoo env's agent acted, 0.0 for a dead agent's padding (None for a single-agent env)."""


class Samples:
    """A whole batch's `Minibatch`, from which `take(index)` gathers the samples at `index`."""

    def __init__(self, full: Minibatch):
        self.full = full
        """Every sample, field by field."""
        self.size = full.actions.shape[0]
        self._columns: list[tuple[str, int, int, bool]] = []
        """(field, first column, end column, whether the field is one number per sample)."""
        parts, width = [], 0
        for name, value in zip(Minibatch._fields, full):
            if value is None or isinstance(value, dict):
                continue
            part = value.unsqueeze(1) if value.dim() == 1 else value.reshape(self.size, -1)
            self._columns.append((name, width, width + part.shape[1], value.dim() == 1))
            parts.append(part)
            width += part.shape[1]
        self._rows = torch.cat(parts, dim=1)
        self._leaves = full.obs if isinstance(full.obs, dict) else None
        """Observation leaves that are not one flat vector, each gathered on its own (images keep their dtype)."""

    def __len__(self) -> int:
        return self.size

    def take(self, index: torch.Tensor) -> Minibatch:
        """The samples at `index` (a 1-d tensor of positions), every field by name."""
        rows = self._rows[index]
        fields: dict = {
            name: rows[:, start] if scalar else rows[:, start:stop] for name, start, stop, scalar in self._columns
        }
        if self._leaves is not None:
            fields["obs"] = {key: leaf[index] for key, leaf in self._leaves.items()}
        return Minibatch(**fields)
