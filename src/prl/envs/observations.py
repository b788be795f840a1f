"""The one description of an observation: its leaves, how each is stored and how each is encoded.

`ObsLayout.from_space` reads a Gymnasium observation space once. Buffers, workers, the policy,
evaluation and checkpoints ask the layout instead of looking at the space again:

- A `Box` that is not an image is one float32 vector leaf (`VECTOR`), flattened. A single such
  Box is the *flat* layout, prl's original path: one `[..., obs_dim]` float tensor.
- A `Box` of uint8 with 2 or 3 dimensions is an image (`IMAGE`), stored as uint8 in its own
  shape and scaled to [0, 1] by its upper bound in the network. Channel order (HWC or CHW) is
  read from the shape.
- `Discrete` and `MultiDiscrete` leaves (`DISCRETE`) are stored as int64 indices counted from
  0 and one-hot encoded in the network. `MultiBinary` is a vector of 0s and 1s.
- `Dict` and `Tuple` spaces give one leaf per entry, named by their path ("image",
  "state.position", "1"); nested spaces are walked in order.
- A top-level Dict entry named `action_mask` (`MASK_KEY`) is the env's action mask (`MASK`):
  one bool per action (`prl.envs.masks`), stored beside the observation so that every path
  that sees the observation sees the mask, and read by the policy, not by any encoder.

Any other space (Text, Graph, Sequence, ...) is refused with a sentence naming its key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import gymnasium as gym
import numpy as np

from prl.errors import ConfigError

if TYPE_CHECKING:
    import torch

VECTOR = "vector"
IMAGE = "image"
DISCRETE = "discrete"
MASK = "mask"

MASK_KEY = "action_mask"
"""The top-level Dict key of an action mask (PettingZoo's and many games' convention)."""

Observations = Union["torch.Tensor", dict]
"""A batch of observations: one tensor for the flat layout, else a dict of tensors by leaf key."""

ArrayObservations = Union[np.ndarray, dict]
"""The same batch as numpy arrays: one array for the flat layout, else a dict of arrays by leaf key."""


def map_obs(fn: Callable[[Any], Any], obs: Union[Observations, ArrayObservations]) -> Any:
    """`fn` applied to the one tensor (or array) of a flat batch, or to each leaf of a dict batch.

    The result is a batch of whatever `fn` returns (tensors or arrays), hence typed `Any`.
    """
    if isinstance(obs, dict):
        return {key: fn(value) for key, value in obs.items()}
    return fn(obs)


@dataclass(frozen=True)
class Leaf:
    """One stored array of an observation: its key, per-step shape, storage dtype and encoding."""

    key: str
    """Path of the leaf in a Dict or Tuple space, joined by dots ("" for a space that is a leaf itself)."""
    kind: str
    """VECTOR, IMAGE, DISCRETE or MASK."""
    shape: tuple[int, ...]
    """Shape of one env's observation of this leaf, as stored."""
    dtype: np.dtype
    """Storage dtype: float32 for vectors, uint8 for images, int64 for discrete indices, bool for a mask."""
    low: Optional[np.ndarray] = field(default=None, compare=False)
    """VECTOR: flat lower bounds (-inf where unbounded)."""
    high: Optional[np.ndarray] = field(default=None, compare=False)
    """VECTOR: flat upper bounds (inf where unbounded)."""
    categories: tuple[int, ...] = ()
    """DISCRETE: the number of values of each index (one entry for Discrete, nvec for MultiDiscrete)."""
    starts: tuple[int, ...] = ()
    """DISCRETE: the space's first value of each index, subtracted before storing."""
    channels_first: bool = True
    """IMAGE: True for CHW (and 2-d images, which get one channel), False for HWC."""
    scale: float = 1.0
    """IMAGE: multiplier that maps stored values onto [0, 1] (1 / the space's upper bound)."""
    path: tuple = ()
    """The Dict keys and Tuple indices that lead to the leaf, to read it out of an observation."""

    @property
    def size(self) -> int:
        """Width of this leaf's input to an MLP: the flat vector size, or the one-hot width (0 for a mask)."""
        if self.kind == DISCRETE:
            return int(sum(self.categories))
        if self.kind == MASK:
            return 0
        return int(math.prod(self.shape))

    @property
    def image_chw(self) -> tuple[int, int, int]:
        """IMAGE: (channels, height, width) as the network sees it."""
        if len(self.shape) == 2:
            return (1, *self.shape)
        c, h, w = self.shape if self.channels_first else (self.shape[2], self.shape[0], self.shape[1])
        return (c, h, w)


def _describe(space: gym.Space) -> str:
    shape = getattr(space, "shape", None)
    return type(space).__name__ if shape is None else f"{type(space).__name__} {tuple(shape)}"


def _channels_first(shape: tuple[int, ...]) -> bool:
    """CHW when the first axis is the shortest, HWC otherwise (Gymnasium's habit, also when in doubt)."""
    if len(shape) == 2:
        return True
    return shape[0] < min(shape[1], shape[2])


def _mask_leaf(path: tuple, space: gym.Space, env_name: str) -> Leaf:
    if not isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        raise ConfigError(
            f"{env_name}'s observation key {MASK_KEY!r} is a {_describe(space)}, not an action mask; "
            "make it a MultiBinary or a Box of 0s and 1s with one entry per action."
        )
    return Leaf(MASK_KEY, MASK, (int(math.prod(space.shape)),), np.dtype(np.bool_), path=path)


def _leaf(key: str, path: tuple, space: gym.Space, env_name: str) -> Leaf:
    if path == (MASK_KEY,):
        return _mask_leaf(path, space, env_name)
    where = f"observation key {key!r}" if key else "observation space"
    if isinstance(space, gym.spaces.Box):
        shape = tuple(int(d) for d in space.shape)
        if space.dtype == np.uint8 and len(shape) > 3:
            raise ConfigError(
                f"{env_name}'s {where} is a uint8 Box {shape}, an image of more than 3 dimensions; "
                "merge the extra axis into the channels (a frame stack of greyscale frames, for example)."
            )
        if space.dtype == np.uint8 and len(shape) >= 2:
            high = float(np.max(space.high))
            scale = 1.0 / max(high, 1.0)
            return Leaf(
                key, IMAGE, shape, np.dtype(np.uint8), channels_first=_channels_first(shape), scale=scale, path=path
            )
        return Leaf(
            key,
            VECTOR,
            (int(math.prod(shape)),),
            np.dtype(np.float32),
            low=np.asarray(space.low, dtype=np.float64).reshape(-1),
            high=np.asarray(space.high, dtype=np.float64).reshape(-1),
            path=path,
        )
    if isinstance(space, gym.spaces.Discrete):
        categories: tuple[int, ...] = (int(space.n),)
        starts: tuple[int, ...] = (int(space.start),)
        return Leaf(key, DISCRETE, (), np.dtype(np.int64), categories=categories, starts=starts, path=path)
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = tuple(int(n) for n in np.asarray(space.nvec).reshape(-1))
        starts = tuple(int(s) for s in np.asarray(space.start, dtype=np.int64).reshape(-1))
        return Leaf(key, DISCRETE, (len(nvec),), np.dtype(np.int64), categories=nvec, starts=starts, path=path)
    if isinstance(space, gym.spaces.MultiBinary):
        n = int(math.prod(space.shape))
        return Leaf(key, VECTOR, (n,), np.dtype(np.float32), low=np.zeros(n), high=np.ones(n), path=path)
    raise ConfigError(
        f"{env_name}'s {where} is a {_describe(space)}, which prl cannot store; "
        "wrap the env so that entry is a Box, Discrete, MultiDiscrete or MultiBinary space "
        "(or drop it with gymnasium.wrappers.FilterObservation)."
    )


def _walk(path: tuple, space: gym.Space, env_name: str) -> list[Leaf]:
    if isinstance(space, gym.spaces.Dict):
        return [leaf for name, sub in space.spaces.items() for leaf in _walk((*path, name), sub, env_name)]
    if isinstance(space, gym.spaces.Tuple):
        return [leaf for i, sub in enumerate(space.spaces) for leaf in _walk((*path, i), sub, env_name)]
    return [_leaf(".".join(str(part) for part in path), path, space, env_name)]


@dataclass(frozen=True)
class ObsLayout:
    """The leaves of an env's observations, in a fixed order, and how to move them around."""

    leaves: tuple[Leaf, ...]

    @classmethod
    def from_space(cls, space: gym.Space, env_name: str = "the env") -> ObsLayout:
        """Describe `space`; raise ConfigError naming any entry prl cannot store."""
        leaves = tuple(_walk((), space, env_name))
        if not leaves:
            raise ConfigError(f"{env_name} has an empty observation space; give it at least one entry.")
        keys = [leaf.key for leaf in leaves]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ConfigError(
                f"{env_name}'s observation has two entries named {twice[0]!r} once nested keys are joined "
                "with dots; rename one of them."
            )
        return cls(leaves)

    @property
    def flat(self) -> bool:
        """True for a single vector leaf: prl's original [..., obs_dim] float32 layout."""
        return len(self.leaves) == 1 and self.leaves[0].kind == VECTOR and self.leaves[0].key == ""

    @property
    def signature(self) -> tuple:
        """Keys, kinds and shapes of the leaves: equal for two envs whose observations store alike."""
        return tuple((leaf.key, leaf.kind, leaf.shape, leaf.categories) for leaf in self.leaves)

    @property
    def mask(self) -> Optional[Leaf]:
        """The action mask's leaf, if the env gives one."""
        return next((leaf for leaf in self.leaves if leaf.kind == MASK), None)

    @property
    def has_images(self) -> bool:
        """True when some leaf is an image."""
        return any(leaf.kind == IMAGE for leaf in self.leaves)

    @property
    def bytes_per_step(self) -> int:
        """Bytes one env's observation takes in a buffer."""
        return sum(int(math.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in self.leaves)

    def allocate(self, *prefix: int) -> Observations:
        """Shared tensors shaped [*prefix, *leaf.shape]: NaN for floats, -1 for integers, 0 for images, False for a mask."""
        import torch  # here, so that the CLI can parse options without importing torch

        def one(leaf: Leaf) -> torch.Tensor:
            value = float("nan") if leaf.dtype.kind == "f" else (-1 if leaf.kind == DISCRETE else 0)
            dtype = torch.from_numpy(np.empty(0, dtype=leaf.dtype)).dtype
            return torch.full((*prefix, *leaf.shape), value, dtype=dtype).share_memory_()

        if self.flat:
            return one(self.leaves[0])
        return {leaf.key: one(leaf) for leaf in self.leaves}

    def split(self, obs: Any) -> list[np.ndarray]:
        """One env observation as one array per leaf, in leaf order, converted for storage."""
        if self.flat:
            return [np.asarray(obs, dtype=np.float32).reshape(-1)]
        arrays = []
        for leaf in self.leaves:
            value = obs
            for part in leaf.path:
                value = value[part]
            if leaf.kind == DISCRETE:
                array = np.asarray(value, dtype=np.int64).reshape(leaf.shape) - np.asarray(leaf.starts).reshape(
                    leaf.shape
                )
            elif leaf.kind == IMAGE:
                array = np.asarray(value, dtype=np.uint8)
            elif leaf.kind == MASK:
                array = np.asarray(value).reshape(-1).astype(np.bool_)
            else:
                array = np.asarray(value, dtype=np.float32).reshape(-1)
            arrays.append(array)
        return arrays

    def stack(self, observations: list) -> ArrayObservations:
        """Env observations stacked into one batch (numpy arrays, leading axis = env)."""
        columns = list(zip(*(self.split(obs) for obs in observations)))
        if self.flat:
            return np.stack(columns[0])
        return {leaf.key: np.stack(column) for leaf, column in zip(self.leaves, columns)}

    def check(self, arrays: list[np.ndarray], env_name: str) -> None:
        """Refuse an observation whose leaves do not fit the declared shapes."""
        for leaf, array in zip(self.leaves, arrays):
            if tuple(array.shape) != leaf.shape:
                where = f"at key {leaf.key!r} " if leaf.key else ""
                raise ConfigError(
                    f"{env_name} returned an observation {where}of shape {tuple(array.shape)}, but its "
                    f"observation space declares {leaf.shape}; make the env's observations match its space."
                )
