"""Small envs with known dynamics for the tests (pickled by value so workers can build them)."""

import gymnasium as gym
import numpy as np


class CountingEnv(gym.Env):
    """Observation = steps taken since reset (plus the env's tag); reward 1 per step.

    Terminates after `terminate_at` steps or truncates after `truncate_at` steps, whichever
    is set and comes first. The action space is chosen by `action_kind`.
    """

    def __init__(self, terminate_at=None, truncate_at=None, action_kind="discrete", fail_at=None):
        self.terminate_at, self.truncate_at, self.fail_at = terminate_at, truncate_at, fail_at
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        self.action_space = {
            "discrete": gym.spaces.Discrete(3),
            "multi_discrete": gym.spaces.MultiDiscrete([2, 4]),
            "box": gym.spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32),
        }[action_kind]
        self.count = 0
        self.total_steps = 0
        self.tag = 0.0

    def _obs(self):
        return np.array([self.count, self.tag], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.tag = float(seed % 1000)
        self.count = 0
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(
            np.asarray(action, dtype=self.action_space.dtype).reshape(self.action_space.shape)
        ), action
        self.count += 1
        self.total_steps += 1
        if self.fail_at is not None and self.total_steps >= self.fail_at:
            raise RuntimeError("toy env failure")
        terminated = self.terminate_at is not None and self.count >= self.terminate_at
        truncated = self.truncate_at is not None and self.count >= self.truncate_at
        return self._obs(), 1.0, terminated, truncated, {}


class DictObsEnv(CountingEnv):
    """A CountingEnv whose observation space is a Dict, which prl refuses."""

    def __init__(self):
        super().__init__()
        self.observation_space = gym.spaces.Dict({"count": gym.spaces.Box(0, 10, shape=(1,))})


def claim(flag_file):
    """True for exactly one caller across processes: whoever creates the flag file first."""
    import os

    try:
        os.close(os.open(flag_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


class FailOnceEnv(CountingEnv):
    """Raises in `step` the first time any instance reaches `fail_at` steps (a flag file marks it)."""

    def __init__(self, flag_file, fail_at=3):
        super().__init__(terminate_at=10)
        self.flag_file, self.fail_at_step = flag_file, fail_at

    def step(self, action):
        if self.count + 1 >= self.fail_at_step and claim(self.flag_file):
            raise RuntimeError("a one-off env failure")
        return super().step(action)


class NonFiniteEnv(CountingEnv):
    """Returns a NaN reward (or observation) at step `nan_at` of an episode, once: a flag file marks that it happened."""

    def __init__(self, flag_file, nan_at=4, where="reward"):
        super().__init__(terminate_at=10)
        self.flag_file, self.nan_at, self.where = flag_file, nan_at, where

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if self.count == self.nan_at and claim(self.flag_file):
            if self.where == "reward":
                reward = float("nan")
            else:
                obs = np.array([np.nan, self.tag], dtype=np.float32)
        return obs, reward, terminated, truncated, info


class HangingEnv(CountingEnv):
    """Stops responding (sleeps for an hour) at step `hang_at`, once: a flag file marks that it happened."""

    def __init__(self, flag_file, hang_at=3):
        super().__init__(terminate_at=10)
        self.flag_file, self.hang_at = flag_file, hang_at

    def step(self, action):
        if self.count + 1 == self.hang_at and claim(self.flag_file):
            import time

            time.sleep(3600)
        return super().step(action)


class WrongShapeEnv(CountingEnv):
    """Declares 2-value observations but returns 3."""

    def _obs(self):
        return np.zeros(3, dtype=np.float32)
