"""Small gymnasium envs used by the envs tests (imported as 'test_envs_helpers:Name' through make_env)."""
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Corridor(gym.Env):
    """Walk right to the end of a 4-cell corridor. Box float32 [3] observation, Discrete(2) actions."""

    def __init__(self, length: int = 4):
        self.length = length
        self.observation_space = spaces.Box(-1.0, float(length), (3,), np.float32)
        self.action_space = spaces.Discrete(2)

    def _obs(self):
        return np.array([self.pos, self.length - self.pos, self.np_random.random()], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        done = self.pos >= self.length
        return self._obs(), float(done), done, False, {}


def make_corridor():
    return Corridor(length=3)


class ChannelsFirst(Corridor):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Dict({"cam": spaces.Box(0, 255, (3, 8, 10), np.uint8),
                                              "pos": spaces.Discrete(5), "flags": spaces.MultiBinary(3)})

    def _obs(self):
        return {"cam": np.full((3, 8, 10), self.pos * 10, np.uint8), "pos": min(self.pos, 4),
                "flags": np.array([1, 0, 1], np.int8)}


class BadReset(Corridor):
    def reset(self, *, seed=None, options=None):
        obs, _ = super().reset(seed=seed)
        return obs                      # old gym API: obs only


class BadStep(Corridor):
    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        return obs, r, term or trunc, info


class NaNReward(Corridor):
    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        self.t = getattr(self, "t", 0) + 1
        return obs, (float("nan") if self.t == 3 else r), term, trunc, info

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return super().reset(seed=seed)


class WrongShape(Corridor):
    def _obs(self):
        return np.zeros(5, np.float32)


class FloatImage(Corridor):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)

    def _obs(self):
        return np.zeros((8, 8, 3), np.float32)


class MultiDiscreteAction(Corridor):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.MultiDiscrete([2, 3])


class TupleObs(Corridor):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))


class Unseeded(Corridor):
    def _obs(self):
        return np.array([self.pos, 0.0, np.random.random()], np.float32)   # global RNG: not reproducible


NOT_AN_ENV = 42


class NeverEnds(Corridor):
    """Neither terminates nor truncates, ever (and has no time limit)."""

    def step(self, action):
        return self._obs(), 0.0, False, False, {}


class NaNObs(Corridor):
    """Its observation turns NaN after the first step."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        obs[2] = np.nan
        return obs, r, term, trunc, info


class UnboundedAction(Corridor):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)


class ObjectChannels(Corridor):
    """A MinAtar-like observation: 10x10 with 7 object channels (uint8 0/255)."""

    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Box(0, 255, (10, 10, 7), np.uint8)

    def _obs(self):
        x = np.zeros((10, 10, 7), np.uint8)
        x[self.pos, 0, self.pos % 7] = 255
        return x
