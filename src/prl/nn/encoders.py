"""Encoders for observations that are not one flat vector: a network per leaf, chosen from the layout.

`ObsEncoder` turns a dict of raw leaves `[B, *leaf shape]` into one feature vector `[B, F]`,
which the policy's actor and critic heads share:

- images: the Nature CNN (conv 32-8-4, 64-4-2, 64-3-1, then 512 units, as in CleanRL's
  ppo_atari) when both sides are at least 36 pixels, else a small CNN of 2x2 convolutions that
  fits grids such as MiniGrid's 7x7 view. Pixels are scaled to [0, 1] first.
- vectors: concatenated, then normalized together by the policy's `ObsNormalizer` (when on).
- discrete indices: one-hot.

`PolicyConfig.encoder` overrides the choice for images: `nature`, `grid`, `mlp` (flatten the
scaled pixels into the MLP heads), or `module:function` for one of your own: a function that
takes the image's `Leaf` (see `Leaf.image_chw`) and returns `(network, output width)`; the
network receives float images [B, C, H, W] scaled to [0, 1]. Workers import the module too, so
it must be importable there (installed, or on PYTHONPATH).
"""

from __future__ import annotations

import importlib
import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prl.envs.observations import DISCRETE, IMAGE, VECTOR, Leaf, ObsLayout
from prl.errors import ConfigError

NATURE_MIN_SIDE = 36
"""The Nature CNN's three convolutions need images at least this many pixels on each side."""


def reads_pixels(layout: ObsLayout) -> bool:
    """True when an image leaf is at least NATURE_MIN_SIDE pixels a side: a picture, which auto
    gives the Nature CNN (about 19 MFLOP a frame), not a grid of cells such as MiniGrid's 7x7."""
    return any(leaf.kind == IMAGE and min(leaf.image_chw[1:]) >= NATURE_MIN_SIDE for leaf in layout.leaves)


def conv_init(layer: Union[nn.Conv2d, nn.Linear], std: float = float(np.sqrt(2))) -> nn.Module:
    """Orthogonal weights with gain `std` and zero bias, as CleanRL initializes its CNNs."""
    nn.init.orthogonal_(layer.weight, std)
    assert layer.bias is not None  # built with the default bias=True
    nn.init.constant_(layer.bias, 0.0)
    return layer


def nature_cnn(channels: int, height: int, width: int) -> tuple[nn.Module, int]:
    """The DQN Nature paper's CNN with a 512-unit output; returns (module, 512)."""
    body = nn.Sequential(
        conv_init(nn.Conv2d(channels, 32, 8, stride=4)),
        nn.ReLU(),
        conv_init(nn.Conv2d(32, 64, 4, stride=2)),
        nn.ReLU(),
        conv_init(nn.Conv2d(64, 64, 3, stride=1)),
        nn.ReLU(),
        nn.Flatten(),
    )
    flat = _output_size(body, channels, height, width)
    return nn.Sequential(body, conv_init(nn.Linear(flat, 512)), nn.ReLU()), 512


GRID_POOL_SIDE = 6
"""The grid CNN pools larger maps down to this many cells a side, so its last layer stays small."""


def grid_cnn(channels: int, height: int, width: int) -> tuple[nn.Module, int]:
    """Three 2x2 convolutions (16, 32, 64 channels) for small grids, then 256 units; returns (module, 256).

    Maps larger than GRID_POOL_SIDE after the convolutions are max-pooled down to it.
    """
    layers: list[nn.Module] = []
    in_channels, side = channels, min(height, width)
    for out_channels in (16, 32, 64):
        if side >= 2:  # a 1-pixel grid keeps fewer convolutions
            layers += [conv_init(nn.Conv2d(in_channels, out_channels, 2)), nn.ReLU()]
            in_channels, side = out_channels, side - 1
    if min(height, width) - len(layers) // 2 > GRID_POOL_SIDE:
        layers.append(nn.AdaptiveMaxPool2d(GRID_POOL_SIDE))
    body = nn.Sequential(*layers, nn.Flatten())
    flat = _output_size(body, channels, height, width)
    return nn.Sequential(body, conv_init(nn.Linear(flat, 256)), nn.ReLU()), 256


def _output_size(body: nn.Module, channels: int, height: int, width: int) -> int:
    with torch.no_grad():
        return int(body(torch.zeros(1, channels, height, width)).shape[1])


def image_encoder(leaf: Leaf, choice: str) -> tuple[nn.Module, int]:
    """The encoder `choice` names for an image leaf (auto: by its size), and its output width."""
    channels, height, width = leaf.image_chw
    if ":" in choice:
        return custom_encoder(choice, leaf)
    if choice == "auto":
        choice = "nature" if min(height, width) >= NATURE_MIN_SIDE else "grid"
    if choice == "nature":
        if min(height, width) < NATURE_MIN_SIDE:
            raise ConfigError(
                f"the Nature CNN needs images of at least {NATURE_MIN_SIDE}x{NATURE_MIN_SIDE} pixels, and the "
                f"observation {leaf.key or 'image'} is {height}x{width}; use --encoder grid (or auto)."
            )
        return nature_cnn(channels, height, width)
    if choice == "grid":
        return grid_cnn(channels, height, width)
    return nn.Flatten(), channels * height * width


def custom_encoder(name: str, leaf: Leaf) -> tuple[nn.Module, int]:
    """The (network, width) that the function `module:function` builds for `leaf`."""
    module_name, _, function_name = name.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ConfigError(
            f"encoder {name!r} cannot be loaded ({error}); name an importable module:function."
        ) from error
    built = function(leaf)
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module)):
        raise ConfigError(f"encoder {name!r} must return (torch.nn.Module, output width), not {type(built).__name__}.")
    return built[0], int(built[1])


class ObsEncoder(nn.Module):
    """Features [B, out_size] from a dict of raw observation leaves, one sub-network per image leaf.

    Args:
        layout: the observation's leaves (`ObsLayout.from_space`).
        choice: `PolicyConfig.encoder` (auto, mlp, nature or grid).

    `forward(obs, normalizer)` takes the policy's `ObsNormalizer` (of `vector_size(layout)`
    values, possibly disabled) for the concatenated vector leaves; the policy owns it, so its
    statistics appear once in the weights.
    """

    def __init__(self, layout: ObsLayout, choice: str):
        super().__init__()
        self.layout = layout
        self.vector_keys = [leaf.key for leaf in layout.leaves if leaf.kind == VECTOR]
        self.discrete = [leaf for leaf in layout.leaves if leaf.kind == DISCRETE]
        self.images = [leaf for leaf in layout.leaves if leaf.kind == IMAGE]
        self.image_nets = nn.ModuleList()
        out_size = vector_size(layout) + sum(leaf.size for leaf in self.discrete)
        for leaf in self.images:
            net, size = image_encoder(leaf, choice)
            self.image_nets.append(net)
            out_size += size
        self.out_size = out_size

    def vectors(self, obs: dict) -> torch.Tensor:
        """The vector leaves of a batch, concatenated [B, vector_size] (raw, not normalized)."""
        first = next(iter(obs.values()))
        if not self.vector_keys:
            return torch.zeros(first.shape[0], 0, device=first.device)
        return torch.cat([obs[key].reshape(obs[key].shape[0], -1) for key in self.vector_keys], dim=1)

    def forward(self, obs: dict, normalizer: nn.Module) -> torch.Tensor:
        parts = []
        if self.vector_keys:
            parts.append(normalizer(self.vectors(obs)))
        for leaf in self.discrete:
            indices = obs[leaf.key].reshape(-1, len(leaf.categories)).long()
            parts += [F.one_hot(indices[:, i], n).float() for i, n in enumerate(leaf.categories)]
        for leaf, net in zip(self.images, self.image_nets):
            pixels = obs[leaf.key].float() * leaf.scale
            if pixels.dim() == 3:  # [B, H, W]: one channel
                pixels = pixels.unsqueeze(1)
            elif not leaf.channels_first:
                pixels = pixels.permute(0, 3, 1, 2)
            parts.append(net(pixels))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def vector_size(layout: ObsLayout) -> int:
    """Total width of a layout's vector leaves, which the observation normalizer covers."""
    return int(sum(math.prod(leaf.shape) for leaf in layout.leaves if leaf.kind == VECTOR))
