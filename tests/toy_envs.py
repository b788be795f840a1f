"""Small envs with known dynamics for the tests (pickled by value so workers can build them)."""

import os
import time

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


class CueImageEnv(gym.Env):
    """A one-step task seen only through a uint8 image: one of `actions` column bands is lit, and
    the action that names it earns 1 (else 0). A policy that reads the image solves it."""

    def __init__(self, size=7, actions=3, channels_first=False):
        self.size, self.actions, self.channels_first = size, actions, channels_first
        shape = (3, size, size) if channels_first else (size, size, 3)
        self.observation_space = gym.spaces.Box(0, 255, shape=shape, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(actions)
        self.cue = 0

    def _obs(self):
        image = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        band = self.size // self.actions
        image[:, self.cue * band : (self.cue + 1) * band, self.cue % 3] = 255
        return image.transpose(2, 0, 1).copy() if self.channels_first else image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(self.actions))
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 if int(action) == self.cue else 0.0
        self.cue = int(self.np_random.integers(self.actions))
        return self._obs(), reward, True, False, {}


class ImageAndVectorEnv(gym.Env):
    """A one-step task whose reward needs two keys of a Dict observation.

    "image" (grey, 6x6) lights its left or right half, "vector" holds +1 or -1, and "noise" is a
    Discrete(3) that means nothing. Action 1 earns 1 when exactly one of (right half lit,
    vector positive) holds, action 0 when both or neither do: neither key alone beats chance.
    """

    def __init__(self):
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, shape=(6, 6), dtype=np.uint8),
                "vector": gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
                "noise": gym.spaces.Discrete(3),
            }
        )
        self.action_space = gym.spaces.Discrete(2)
        self.right = self.positive = False

    def _obs(self):
        image = np.zeros((6, 6), dtype=np.uint8)
        image[:, 3:] = 255 if self.right else 0
        image[:, :3] = 0 if self.right else 255
        vector = np.array([1.0 if self.positive else -1.0], dtype=np.float32)
        return {"image": image, "vector": vector, "noise": int(self.np_random.integers(3))}

    def _draw(self):
        self.right, self.positive = bool(self.np_random.integers(2)), bool(self.np_random.integers(2))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._draw()
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 if int(action) == int(self.right != self.positive) else 0.0
        self._draw()
        return self._obs(), reward, True, False, {}


def claim(flag_file):
    """True for exactly one caller across processes: whoever creates the flag file first."""
    import os

    try:
        os.close(os.open(flag_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


class SlowInOneWorker(CountingEnv):
    """Sleeps `delay` seconds per step in one worker process: the first other than `parent_pid` to build one
    (its pid goes into `flag_file`), so that one worker straggles and the others do not."""

    def __init__(self, flag_file, parent_pid, delay):
        super().__init__(terminate_at=5)
        self.delay = 0.0
        if os.getpid() != parent_pid:
            if claim(flag_file):  # first come: it writes its process id
                with open(flag_file, "w") as file:
                    file.write(str(os.getpid()))
            deadline = time.monotonic() + 10
            while not open(flag_file).read() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.delay = delay if open(flag_file).read() == str(os.getpid()) else 0.0

    def step(self, action):
        if self.delay:
            time.sleep(self.delay)
        return super().step(action)


class FailOnceEnv(CountingEnv):
    """Raises in `step` the first time any instance reaches `fail_at` steps (a flag file marks it)."""

    def __init__(self, flag_file, fail_at=3):
        super().__init__(terminate_at=10)
        self.flag_file, self.fail_at_step = flag_file, fail_at

    def step(self, action):
        if self.count + 1 >= self.fail_at_step and claim(self.flag_file):
            raise RuntimeError("a one-off env failure")
        return super().step(action)


class BuildsInOneProcess(CountingEnv):
    """Builds only in the process whose id it is given: a stand-in for an env whose package a worker's node lacks."""

    def __init__(self, pid):
        if os.getpid() != pid:
            raise RuntimeError(f"this env cannot be built outside process {pid}")
        super().__init__(terminate_at=5)


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


class ShrinkingObsEnv(CountingEnv):
    """Returns its declared 2-value observation on reset, then a 1-value one (which numpy would broadcast)."""

    def _obs(self):
        return super()._obs() if self.count == 0 else np.zeros(1, dtype=np.float32)


def tiny_encoder(leaf):
    """A custom image encoder for the tests (`--encoder toy_envs:tiny_encoder`): one 1x1 convolution, then a mean."""
    import torch

    channels = leaf.image_chw[0]

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(channels, 5, 1)

        def forward(self, pixels):
            return self.conv(pixels).mean(dim=(2, 3))

    return Tiny(), 5


class _MovesElsewhere(gym.Env):
    """prl's game of illegal moves (`prl.envs.tasks.IllegalMoves`) seen through its values alone, its
    mask given elsewhere: in the info (`source="info"`) or by `action_masks()` (`source="method"`)."""

    def __init__(self, source: str):
        from prl.envs.tasks import IllegalMoves

        self.game, self.source = IllegalMoves(), source
        self.observation_space = self.game.observation_space["worth"]
        self.action_space = self.game.action_space

    def _out(self, obs: dict, info: dict) -> tuple:
        if self.source == "info":
            info = {**info, "action_mask": obs["action_mask"]}
        return obs["worth"], info

    def reset(self, *, seed=None, options=None):
        return self._out(*self.game.reset(seed=seed))

    def step(self, action):
        obs, reward, terminated, truncated, info = self.game.step(action)
        values, info = self._out(obs, info)
        return values, reward, terminated, truncated, info


class MovesMaskedInInfo(_MovesElsewhere):
    def __init__(self):
        super().__init__("info")


class MovesMaskedByMethod(_MovesElsewhere):
    def __init__(self):
        super().__init__("method")

    def action_masks(self):
        return self.game.action_masks()


class MaskGoesWrong(gym.Env):
    """The game of illegal moves whose mask, after `at` steps, allows nothing (`wrong="empty"`) or
    loses an entry (`wrong="short"`)."""

    def __init__(self, at: int = 70, wrong: str = "empty"):
        from prl.envs.tasks import IllegalMoves

        self.game, self.at, self.wrong, self.steps = IllegalMoves(), at, wrong, 0
        self.observation_space, self.action_space = self.game.observation_space, self.game.action_space

    def reset(self, *, seed=None, options=None):
        return self.game.reset(seed=seed)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.game.step(action)
        self.steps += 1
        if self.steps >= self.at:
            obs["action_mask"] = np.zeros(10, np.int8) if self.wrong == "empty" else obs["action_mask"][:9]
        return obs, reward, terminated, truncated, info


class ToyAgents:
    """A PettingZoo-style ParallelEnv of three agents that finish at different steps (`ends`).

    Agent k observes [k, steps since reset, the env's tag] and earns k + 1 per step, or, with
    `match_id`, 1 for playing action k and 0 otherwise, and observes 0 in place of k (a task the
    shared policy can only solve when it is told which agent it is). With `masked`, observations are Dicts with an `action_mask`
    that allows action k and one other. `fail_at` and `hang_at` (with a `flag_file`) make one
    step of one env raise or hang, once across processes.
    """

    metadata = {"name": "toy_agents"}

    def __init__(self, ends=(3, 5, 7), match_id=False, masked=False, fail_at=None, hang_at=None, flag_file=None):
        self.possible_agents = ["a0", "a1", "a2"]
        self.ends, self.match_id, self.masked = tuple(ends), match_id, masked
        self.fail_at, self.hang_at, self.flag_file = fail_at, hang_at, flag_file
        vector = gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
        self._obs_space = (
            gym.spaces.Dict({"obs": vector, "action_mask": gym.spaces.MultiBinary(3)}) if masked else vector
        )
        self._action_space = gym.spaces.Discrete(3)
        self.agents = []
        self.count, self.tag, self.total_steps = 0, 0.0, 0

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._action_space

    def _obs(self, index):
        vector = np.array([0 if self.match_id else index, self.count, self.tag], dtype=np.float32)
        if not self.masked:
            return vector
        mask = np.zeros(3, dtype=np.int8)
        mask[index] = mask[(index + self.count) % 3] = 1
        return {"obs": vector, "action_mask": mask}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.tag = float(seed % 1000)
        self.count = 0
        self.agents = list(self.possible_agents)
        return {agent: self._obs(int(agent[1])) for agent in self.agents}, {agent: {} for agent in self.agents}

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        self.count += 1
        self.total_steps += 1
        if self.fail_at is not None and self.total_steps >= self.fail_at and claim(self.flag_file):
            raise RuntimeError("toy agents failure")
        if self.hang_at is not None and self.total_steps >= self.hang_at and claim(self.flag_file):
            import time

            time.sleep(3600)
        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for agent, action in actions.items():
            index = int(agent[1])
            observations[agent] = self._obs(index)
            rewards[agent] = float(int(action) == index) if self.match_id else float(index + 1)
            terminations[agent] = self.count >= self.ends[index]
            truncations[agent] = False
            infos[agent] = {}
        self.agents = [agent for agent in self.agents if not terminations[agent]]
        return observations, rewards, terminations, truncations, infos

    def close(self):
        pass


class ToyTurns(ToyAgents):
    """A turn-based (AEC) env's interface: agents act one at a time (`agent_iter`)."""

    def agent_iter(self):
        return iter(self.agents)


class ToyMixedSpaces(ToyAgents):
    """Agents whose observation spaces differ."""

    def observation_space(self, agent):
        return gym.spaces.Box(-np.inf, np.inf, shape=(3 + int(agent[1]),), dtype=np.float32)
