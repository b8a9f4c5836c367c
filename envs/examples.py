"""Two tiny example envs — templates for your own. Importing `envs` registers them with gymnasium:

    QuatrixWorld/ListenCorridor-v0   vector + audio observation; the agent must listen to find the goal
    QuatrixWorld/SayColor-v0         text instruction + vector observation; the agent must read

Both are plain gymnasium.Env classes: `make_env("QuatrixWorld/SayColor-v0")` or
`make_env("envs.examples:SayColor")` both work.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ListenCorridor(gym.Env):
    """A 1-D corridor; the goal is at the left or right end and only a tone tells which.

    Observation (Dict):
      "observation": one-hot position, float32 [length]
      "audio":       float32 [1024] waveform at 8 kHz — 440 Hz means "goal on the left", 1760 Hz "right"
    Actions: 0 = left, 1 = right. Reward 1 for reaching the goal end; the wrong end ends the episode
    with 0. Episodes are cut at 20 steps (registered max_episode_steps).
    """

    SAMPLE_RATE, N = 8000, 1024
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4, "audio_sample_rate": SAMPLE_RATE}
    FREQS = (440.0, 1760.0)        # index = goal side (0 left, 1 right)

    def __init__(self, length: int = 7, noise: float = 0.05, render_mode: str | None = None):
        self.length, self.noise, self.render_mode = int(length), float(noise), render_mode
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(0.0, 1.0, (self.length,), np.float32),
            "audio": spaces.Box(-2.0, 2.0, (self.N,), np.float32)})
        self.action_space = spaces.Discrete(2)
        t = np.arange(self.N) / self.SAMPLE_RATE
        self._tones = [np.sin(2 * np.pi * f * t).astype(np.float32) for f in self.FREQS]

    def _obs(self):
        pos = np.zeros(self.length, np.float32)
        pos[self.pos] = 1.0
        audio = self._tones[self.goal] + self.noise * self.np_random.standard_normal(self.N).astype(np.float32)
        return {"observation": pos, "audio": np.clip(audio, -2.0, 2.0).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)                      # seeds self.np_random
        self.goal = int(self.np_random.integers(2))   # which end holds the goal, new each episode
        self.pos = self.length // 2
        return self._obs(), {"goal": self.goal}

    def step(self, action):
        self.pos += 1 if int(action) == 1 else -1
        at_end = self.pos in (0, self.length - 1)
        reward = float(at_end and (self.pos == 0) == (self.goal == 0))
        return self._obs(), reward, at_end, False, {"goal": self.goal}

    def render(self):
        img = np.full((8, self.length * 8, 3), 40, np.uint8)
        img[:, (0 if self.goal == 0 else self.length - 1) * 8:][:, :8] = (40, 200, 40)   # goal cell
        img[2:6, self.pos * 8 + 2:self.pos * 8 + 6] = (230, 60, 60)                       # agent
        return img


class SayColor(gym.Env):
    """Read the instruction ("go to the red square"), answer with the colour's index. One step.

    Observation (Dict):
      "observation": float32 [4] constant context (a bias input; real envs put state here)
      "mission":     gymnasium Text — the instruction, new each episode
    Actions: Discrete(len(COLORS)); reward 1 if the chosen colour is the one named, else 0.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    COLORS = ("red", "green", "blue", "yellow")
    RGB = {"red": (230, 40, 40), "green": (40, 200, 40), "blue": (40, 80, 230), "yellow": (230, 220, 40)}

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode
        self.observation_space = spaces.Dict({
            "observation": spaces.Box(0.0, 1.0, (4,), np.float32),
            "mission": spaces.Text(max_length=64, charset="abcdefghijklmnopqrstuvwxyz ")})
        self.action_space = spaces.Discrete(len(self.COLORS))

    def _obs(self):
        return {"observation": np.ones(4, np.float32), "mission": f"go to the {self.COLORS[self.target]} square"}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.target = int(self.np_random.integers(len(self.COLORS)))
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.target)
        return self._obs(), reward, True, False, {"target": self.target}

    def render(self):
        return np.tile(np.array(self.RGB[self.COLORS[self.target]], np.uint8), (16, 16, 1))


def register_examples() -> None:
    """Register the example ids with gymnasium (idempotent)."""
    # SayColor always terminates after its one step, so it needs no time limit.
    for name, cls, steps in (("ListenCorridor-v0", ListenCorridor, 20), ("SayColor-v0", SayColor, None)):
        env_id = f"QuatrixWorld/{name}"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=f"{__name__}:{cls.__name__}", max_episode_steps=steps)
