"""Env families: gymnasium ids that need their own preprocessing, in one registry.

A family owns the ids that start with one of its prefixes, the extra `make_env` options it takes
(with their defaults), the `gymnasium.make` arguments its protocol needs (`make_kwargs`, a user's
own win), the package that registers its ids (`requires`, with the pip extra that installs it),
`register_ids` for a suite whose package does not register gymnasium ids itself (Crafter, DMC: our
adapters in envs/crafter.py and envs/dmc.py do) and `wrap(env, options) -> (env, observation keys
to drop)`, applied right after `gymnasium.make`. Any other id is made as it is.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import gymnasium as gym
import numpy as np

from .errors import EnvError


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]
    options: dict[str, Any]
    wrap: Callable[[gym.Env, dict], tuple[gym.Env, tuple]]
    make_kwargs: dict = field(default_factory=dict)
    requires: tuple[str, str] | None = None          # (module that registers the ids, pip extra)
    register_ids: Callable[[], None] | None = None   # registers the ids after `requires` imported

    def owns(self, env_id: str) -> bool:
        return env_id.startswith(self.prefixes)

    def register(self) -> None:
        """Import the package that registers this family's ids, or say how to install it."""
        if self.requires is None:
            return
        module, extra = self.requires
        if any(k.startswith(self.prefixes) for k in gym.registry):
            return                              # registered already
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise EnvError(f"{self.name} envs need the '{module}' package — pip install -e \".[{extra}]\" "
                           f"(or pip install quatrix-world[{extra}])") from None
        if self.register_ids is not None:                       # crafter, dm_control: our adapters
            self.register_ids()
        elif callable(getattr(mod, "register_envs", None)):     # minatar.gym
            mod.register_envs()
        elif hasattr(gym, "register_envs"):                     # ale_py
            gym.register_envs(mod)


def _wrap_minigrid(env: gym.Env, opts: dict) -> tuple[gym.Env, tuple]:
    """MiniGrid from pixels: the agent's partial view (or the full grid) as RGB; the mission text stays."""
    from minigrid.wrappers import RGBImgObsWrapper, RGBImgPartialObsWrapper
    wrapper = RGBImgObsWrapper if opts["full_view"] else RGBImgPartialObsWrapper
    return wrapper(env, tile_size=int(opts["tile_size"])), ("direction",)


class AtariFrames(gym.Wrapper):
    """The Atari 100k protocol's preprocessing (DreamerV3, STORM): `frame_skip` emulator frames per
    step with the reward summed and the observation the max over the last two frames (Atari
    sprites flicker), resized to `size` x `size` RGB (PIL's area filter), up to `noop_max` no-op
    steps at reset. A lost life ends the episode only with `life_loss=True`."""

    def __init__(self, env: gym.Env, frame_skip: int = 4, size: int = 64, noop_max: int = 30,
                 life_loss: bool = False):
        super().__init__(env)
        self.frame_skip, self.size, self.noop_max, self.life_loss = frame_skip, size, noop_max, life_loss
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.lives = 0

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        from PIL import Image
        return np.array(Image.fromarray(frame).resize((self.size, self.size), Image.Resampling.BOX))

    def _lives(self) -> int:
        return int(self.env.unwrapped.ale.lives())

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        for _ in range(int(self.env.unwrapped.np_random.integers(0, self.noop_max + 1)) if self.noop_max else 0):
            obs, _, term, trunc, info = self.env.step(0)
            if term or trunc:
                obs, info = self.env.reset()
        self.lives = self._lives()
        return self._resize(obs), info

    def step(self, action):
        total, frames = 0.0, []
        term = trunc = False
        info = {}
        for _ in range(self.frame_skip):
            obs, r, term, trunc, info = self.env.step(action)
            total += float(r)
            frames = (frames + [obs])[-2:]
            if self.life_loss and self._lives() < self.lives:
                term = True
            if term or trunc:
                break
        self.lives = self._lives()
        return self._resize(np.maximum.reduce(frames)), total, term, trunc, info


def _wrap_atari(env: gym.Env, opts: dict) -> tuple[gym.Env, tuple]:
    """Sticky actions (0.25), the minimal action set and the 108k-frame cap come from `make_kwargs`;
    rewards stay unclipped (the agent's symlog two-hot handles their scale)."""
    return AtariFrames(env, size=int(opts["screen_size"]), life_loss=bool(opts["life_loss"])), ()


class MinAtarChannels(gym.ObservationWrapper):
    """MinAtar's 10x10xC boolean channels (one per object kind) as a uint8 image of C channels
    (0 or 255), not RGB; videos colour the channels (envs.video.channels_to_rgb)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(0, 255, env.observation_space.shape, np.uint8)

    def observation(self, obs):
        return obs.astype(np.uint8) * 255

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)      # MinAtar seeds its own game RNG
        if seed is not None:                # and gymnasium's, as its API asks (MinAtar skips super().reset)
            self.env.unwrapped.np_random = np.random.default_rng(seed)
        return self.observation(obs), info


def _wrap_minatar(env: gym.Env, opts: dict) -> tuple[gym.Env, tuple]:
    return MinAtarChannels(env), ()


def _as_is(env: gym.Env, opts: dict) -> tuple[gym.Env, tuple]:
    """Suites whose adapter already speaks the protocol (envs/crafter.py, envs/dmc.py)."""
    return env, ()


def _adapter(module: str) -> Callable[[], None]:
    """Registers the ids of our adapter module envs/<module>.py (imported only when used)."""
    return lambda: importlib.import_module(f"{__package__}.{module}").register_envs()


FAMILIES: list[Family] = [
    Family("MiniGrid", ("MiniGrid-",), {"full_view": False, "tile_size": 8}, _wrap_minigrid),
    Family("Atari", ("ALE/",), {"life_loss": False, "screen_size": 64}, _wrap_atari,
           make_kwargs={"frameskip": 1, "repeat_action_probability": 0.25, "full_action_space": False,
                        "max_num_frames_per_episode": 108_000},
           requires=("ale_py", "atari")),
    Family("MinAtar", ("MinAtar/",), {}, _wrap_minatar, requires=("minatar.gym", "minatar")),
    Family("Crafter", ("Crafter-", "crafter"), {}, _as_is, requires=("crafter", "crafter"),
           register_ids=_adapter("crafter")),
    Family("DMC", ("dmc/",), {}, _as_is, requires=("dm_control", "dmc"), register_ids=_adapter("dmc")),
]


def family_of(env_id: str) -> Family | None:
    return next((f for f in FAMILIES if f.owns(env_id)), None)


def family_options() -> set[str]:
    """Every option some family takes."""
    return {k for f in FAMILIES for k in f.options}
