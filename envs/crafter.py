"""Crafter (Hafner, 2021) as a gymnasium env: `make_env("crafter")` or `make_env("Crafter-v1")`.

The `crafter` package speaks the old gym API (reset -> obs, step -> obs, reward, done, info); this
adapter gives it gymnasium's, with the protocol DreamerV3 trains on and the Crafter paper scores:

- observation: the 64x64 RGB uint8 frame (the 9x7 local view above a 9x2 inventory strip), a
  lone Box, so the data contract calls it `pixels`;
- actions: Discrete(17), crafter's action list (noop, move_left, ..., make_iron_sword);
- reward: CrafterReward-v1's, +1 for each achievement unlocked for the first time in the
  episode and +-0.1 per health point gained or lost;
- an episode ends at death (`terminated`) or at crafter's length, 10,000 steps (`truncated`);
- `reset(seed=s)` generates the same world (and the same creature moves) for the same s; a reset
  without a seed continues the env's own seeded stream of worlds.

Evaluation hooks, read by `agents.evaluate.Evaluator` from any env that has them:
`episode_metrics()` gives `achievement/<name>` = 100 if the current episode unlocked it, else 0 (so
their mean over episodes is the success rate in percent), and `summary_metrics(rows)` turns the
per-episode rows of one evaluation into `crafter_score`, the paper's score (`crafter_score`).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from .errors import EnvError

LENGTH = 10_000                     # crafter's episode length (CrafterReward-v1's time limit)
IDS = ("crafter", "Crafter-v1")


def crafter_score(success_rates) -> float:
    """The Crafter score (Hafner, 2021, eq. 1): exp(mean_i ln(1 + s_i)) - 1, the geometric mean
    of 1 + the success rates s_i, in percent (0-100), of the achievements (a dict name -> s_i, or
    the rates themselves). 0 when nothing was ever unlocked, 100 when everything always was."""
    rates = np.asarray(list(success_rates.values()) if isinstance(success_rates, dict) else success_rates,
                       np.float64).reshape(-1)
    if rates.size == 0:
        raise EnvError("crafter_score needs at least one achievement's success rate")
    if not np.all(np.isfinite(rates)) or rates.min() < 0 or rates.max() > 100:
        raise EnvError(f"crafter_score takes success rates in percent (0-100), got {rates.tolist()}")
    return float(np.exp(np.mean(np.log1p(rates))) - 1.0)


def _crafter():
    try:
        import crafter
    except ImportError:
        raise EnvError('Crafter envs need the \'crafter\' package — pip install -e ".[crafter]" '
                       "(or pip install quatrix-world[crafter])") from None
    return crafter


class CrafterEnv(gym.Env):
    """One Crafter world at a time; see the module docstring for the protocol.

    size: the observation's side in pixels; length: the step at which an episode is truncated;
    reward: False gives CrafterNoReward-v1 (reward 0, achievements still counted); render_size:
    the side of `render()` frames (default: size).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 64, length: int = LENGTH, reward: bool = True, render_mode: str | None = None,
                 render_size: int | None = None):
        crafter = _crafter()
        for name, v, least in (("size", size, 9), ("length", length, 1), ("render_size", render_size or 9, 9)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise EnvError(f"Crafter option {name} must be an int of at least {least}, got {v!r}")
        if render_mode not in (None, "rgb_array"):
            raise EnvError(f"Crafter renders only render_mode='rgb_array', got {render_mode!r}")
        self._make = lambda seed: crafter.Env(size=(int(size), int(size)), reward=bool(reward), length=int(length),
                                              seed=seed)
        self.size, self.length, self.render_mode = int(size), int(length), render_mode
        self.render_size = int(render_size or size)
        self.achievements = tuple(crafter.constants.achievements)
        self.observation_space = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(len(crafter.constants.actions))
        self.max_steps = self.length                 # the episode limit make_env reports
        self._env = None
        self._counts: dict = {}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or self._env is None:    # a new stream of worlds, from the seed or our own RNG
            self._env = self._make(int(seed) if seed is not None else int(self.np_random.integers(2 ** 31 - 1)))
        obs = self._env.reset()
        self._counts = dict.fromkeys(self.achievements, 0)
        return np.ascontiguousarray(obs), {}

    def step(self, action):
        if self._env is None:
            raise EnvError("Crafter env stepped before reset() — call reset() first")
        obs, reward, done, info = self._env.step(int(action))
        info = {k: v.copy() if hasattr(v, "copy") else v for k, v in info.items()}   # player_pos is shared
        self._counts = dict(info["achievements"])
        dead = info["discount"] == 0
        return np.ascontiguousarray(obs), float(reward), bool(dead), bool(done and not dead), info

    def render(self):
        if self._env is None:
            raise EnvError("Crafter env rendered before reset() — call reset() first")
        return self._env.render((self.render_size, self.render_size))

    # -- evaluation hooks
    def episode_metrics(self) -> dict:
        """The current episode's achievements: 100.0 when unlocked at least once, else 0.0."""
        return {f"achievement/{a}": 100.0 if self._counts.get(a, 0) > 0 else 0.0 for a in self.achievements}

    def summary_metrics(self, rows: list) -> dict:
        """The Crafter score over episodes' `episode_metrics` rows (success rates as their means)."""
        if not rows:
            return {}
        rates = {a: float(np.mean([r[f"achievement/{a}"] for r in rows])) for a in self.achievements}
        return {"crafter_score": crafter_score(rates)}


def register_envs() -> None:
    """Register `crafter` and `Crafter-v1` with gymnasium (crafter itself registers old-gym ids only)."""
    for env_id in IDS:
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="envs.crafter:CrafterEnv", disable_env_checker=True)

