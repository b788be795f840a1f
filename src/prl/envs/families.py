"""Env families that prl knows by their id's prefix: the package that registers them, and their preprocessing.

`make(env_id, kwargs)` is how `EnvFactory` builds every id. For an id of a known family it
imports the family's package first (so its ids are registered, or a missing extra is named in
one sentence), then applies the family's standard wrappers:

- `ALE/...` (the `atari` extra): the standard preprocessing of CleanRL's ppo_atari and SB3's
  AtariWrapper. Made with `frameskip=1`, then `AtariPreprocessing` (up to 30 no-ops at reset,
  frame skip 4, 84x84 greyscale), FIRE pressed at the start of every life for games that
  need it, the loss of a life as an episode end and sign-clipped rewards, for learning only,
  and a stack of the last 4 frames (`env_kwargs={"frame_stack": 1}` for one frame, the input
  of a recurrent policy as in CleanRL's ppo_atari_lstm). `GameScore` records the game's real score over all its
  lives, unclipped, and every return prl reports comes from it (`Family.game_scores`).
- `prl/...`: the tasks prl registers itself (`prl.envs.tasks`): CartPole without velocities, and
  a game of illegal moves for action masks.
- `popgym-...` (the `popgym` extra): the POPGym suite (Morad et al., ICLR 2023) of memory tasks,
  as POPGym makes them; `env_kwargs={"previous_action": true}` adds the agent's last action to
  each observation, the view POPGym's baselines train on (`PreviousAction`).
- `MiniGrid-...` and `BabyAI-...` (the `minigrid` extra): trained from the agent's 7x7 view
  alone (`ImgObsWrapper`; the mission text is dropped). The view holds object, colour and
  state indices of at most 10, and its space says so, so the network scales it by 1/10
  rather than by the 1/255 of a camera image.

Any other id goes to `gymnasium.make` as it is.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import gymnasium as gym
import numpy as np

from prl.errors import ConfigError


@dataclass(frozen=True)
class Family:
    """A family of env ids: the package that registers them, prl's extra for it, and its wrappers."""

    prefixes: tuple[str, ...]
    module: str
    extra: str
    wrap: Callable[..., gym.Env]
    """`wrap(env, **options)`: the family's wrappers around the env `gymnasium.make` built."""
    make_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """Arguments for `gymnasium.make` that the wrappers need (a user's env_kwargs still win)."""
    options: Mapping[str, tuple[Callable[[Any], bool], str]] = field(default_factory=dict)
    """env_kwargs that prl's wrappers take rather than `gymnasium.make`: each name's check of a
    value and what a valid value is, in words. The wrappers' keyword arguments give the defaults."""
    on_import: Optional[Callable[[Any], None]] = None
    """Called with the imported package before any env is made (to quiet its logging, say)."""
    game_scores: bool = False
    """True when an episode prl learns from is not a whole game: returns are then read from
    the `info` that `GameScore` adds when a game ends (see `game_result`)."""


GAME_OVER = "prl_game_over"
"""`info` key: True at the step a whole game ends (all lives lost, or the time limit)."""
GAME_SCORE = "prl_game_score"
"""`info` key: the game's unclipped score so far, summed over all its lives."""
GAME_LENGTH = "prl_game_length"
"""`info` key: agent steps taken in this game so far."""


def game_result(info: Mapping[str, Any]) -> Optional[tuple[float, int]]:
    """(score, length) of the game that ended at this step, or None if no game ended."""
    if info.get(GAME_OVER):
        return float(info[GAME_SCORE]), int(info[GAME_LENGTH])
    return None


class GameScore(gym.Wrapper):
    """Adds the game's running score and length to every step's info, and GAME_OVER when it ends."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.score, self.length = 0.0, 0

    def reset(self, **kwargs):
        self.score, self.length = 0.0, 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.score += float(reward)
        self.length += 1
        info = {**info, GAME_SCORE: self.score, GAME_LENGTH: self.length, GAME_OVER: terminated or truncated}
        return obs, reward, terminated, truncated, info


class LifeLoss(gym.Wrapper):
    """Ends an episode when a life is lost; the next reset goes on with the same game (one no-op).

    Only a game over resets the game itself, so the agent learns that losing a life is final
    while the emulator keeps the game's state, as the DQN papers did.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives, self.game_over = 0, True

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class PreviousAction(gym.Wrapper):
    """Shows the agent its own last action: observations become (observation, previous action,
    first step), a Tuple whose last entry is 1 on an episode's first observation (where the
    previous action is the null one: the space's lowest) and 0 after.

    POPGym's baselines train on this view (its PreviousAction and Antialias wrappers): a memory
    then holds what the agent answered as well as what it saw, which is what turns CountRecall's
    answer into a running count.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        space = env.action_space
        self.observation_space = gym.spaces.Tuple((env.observation_space, space, gym.spaces.Discrete(2)))
        if isinstance(space, gym.spaces.Discrete):
            self.null_action: Any = int(space.start)
        elif isinstance(space, gym.spaces.MultiDiscrete):
            self.null_action = np.asarray(space.start, dtype=space.dtype).copy()
        elif isinstance(space, gym.spaces.Box):
            self.null_action = np.clip(np.zeros(space.shape, space.dtype), space.low, space.high)
        else:
            raise ConfigError(
                f"previous_action needs a Discrete, MultiDiscrete or Box action space, not {type(space).__name__}; "
                "leave previous_action out for this env."
            )

    def _shown(self, action: Any) -> Any:
        space = self.env.action_space
        if isinstance(space, gym.spaces.Discrete):
            return int(np.asarray(action).reshape(()))
        return np.asarray(action, dtype=space.dtype).reshape(space.shape)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return (obs, self.null_action, 1), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return (obs, self._shown(action), 0), reward, terminated, truncated, info


class FireAtStart(gym.Wrapper):
    """Presses FIRE at the start of every life in games that wait for it (Breakout's ball)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        for action in (1, 2):  # FIRE, then a move, as SB3's FireResetEnv
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


ATARI_FRAME_STACK = 4
"""Frames the policy sees at once, unless env_kwargs say `frame_stack`."""


def _atari(env: gym.Env, frame_stack: int = ATARI_FRAME_STACK) -> gym.Env:
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
    env = LifeLoss(GameScore(env))
    meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]  # ALE's AtariEnv, typed as gym.Env
    if "FIRE" in meanings and len(meanings) >= 3:  # FIRE, then a move: the reset needs both
        env = FireAtStart(env)
    env = gym.wrappers.TransformReward(env, lambda reward: float(np.sign(float(reward))))
    return gym.wrappers.FrameStackObservation(env, frame_stack)  # (frames, 84, 84), one frame too


def _whole_and_positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _quiet_ale(ale_py) -> None:
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no banner from every env


MINIGRID_MAX_INDEX = 10
"""The largest value in a MiniGrid view: object indices run to 10, colours to 5, states to 2."""


def _minigrid(env: gym.Env) -> gym.Env:
    from minigrid.wrappers import ImgObsWrapper

    env = ImgObsWrapper(env)
    env.observation_space = gym.spaces.Box(0, MINIGRID_MAX_INDEX, env.observation_space.shape, np.uint8)
    return env


def _as_made(env: gym.Env) -> gym.Env:
    return env


def _popgym(env: gym.Env, previous_action: bool = False) -> gym.Env:
    return PreviousAction(env) if previous_action else env


FAMILIES = (
    Family(("prl/",), "prl.envs.tasks", "", _as_made),
    Family(
        ("popgym-",),
        "popgym",
        "popgym",
        _popgym,
        options={"previous_action": (lambda value: isinstance(value, bool), "true or false")},
    ),
    Family(
        ("ALE/",),
        "ale_py",
        "atari",
        _atari,
        {"frameskip": 1},
        options={"frame_stack": (_whole_and_positive, "a whole number of frames, 1 or more")},
        on_import=_quiet_ale,
        game_scores=True,
    ),
    Family(("MiniGrid-", "BabyAI-"), "minigrid", "minigrid", _minigrid),
)


def family_of(env_id: str) -> Optional[Family]:
    """The family an id belongs to, by prefix, or None."""
    return next((family for family in FAMILIES if env_id.startswith(family.prefixes)), None)


def make(env_id: str, kwargs: Mapping[str, Any]) -> gym.Env:
    """Build `env_id` with `kwargs`, with its family's package imported and its wrappers applied."""
    family = family_of(env_id)
    if family is None:
        return gym.make(env_id, **kwargs)
    try:
        package = importlib.import_module(family.module)
    except ImportError as error:
        raise ConfigError(
            f"{env_id} needs the {family.module} package, which is not installed ({error}); "
            f'install prl\'s {family.extra} extra: pip install -e ".[{family.extra}]".'
        ) from error
    if family.on_import is not None:
        family.on_import(package)
    options = {name: kwargs[name] for name in family.options if name in kwargs}
    for name, value in options.items():
        check, valid = family.options[name]
        if not check(value):
            raise ConfigError(f"env_kwargs {name}={value!r} is not valid for {env_id}: give {valid}.")
    made = {name: value for name, value in kwargs.items() if name not in options}
    return family.wrap(gym.make(env_id, **{**family.make_kwargs, **made}), **options)
