"""Turn any supported gymnasium observation space into the Quatrix data contract.

`QuatrixObservation` is a plain gymnasium.ObservationWrapper: after it, every observation is a dict
of numpy arrays with fixed shapes and dtypes, one entry per key, by kind —

    image   uint8   [H, W, C]   (C×H×W boxes are transposed)
    vector  float32 [D]         (Box, Discrete→one-hot, MultiBinary, MultiDiscrete→one-hots)
    tokens  int64   [L]         (Text / MiniGrid MissionSpace, via `Tokenizer`)
    audio   float32 [N]         (only a Dict key literally named 'audio')

A Dict observation keeps its own keys (`{"camera": ..., "speed": ...}` stays camera / speed in the
replay, the logs, `world.encoder.kinds.<key>` and the decoder losses); a lone space is named as
torchrl names it, `pixels` for an image and `observation` otherwise (CANONICAL). Every raw observation is checked
against its space (shape, dtype, integer ranges) and a mismatch raises EnvError naming the key;
NaN or inf in a float observation is refused the same way. Float values outside their Box are let
through (many envs step slightly outside their declared bounds).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .errors import EnvError
from .tokenizer import Tokenizer

CANONICAL = {"image": "pixels", "vector": "observation", "tokens": "observation", "audio": "observation"}
RESERVED = {"action", "reward", "done", "terminated", "truncated", "is_init", "next", "_reset", "_step"}
SUPPORTED_OBS = ("Box (uint8 images HxWxC or CxHxW, numeric vectors/arrays), Discrete, MultiBinary, "
                 "MultiDiscrete, Text, MiniGrid MissionSpace, or a flat Dict of these")


def is_text_space(space) -> bool:
    return isinstance(space, spaces.Text) or type(space).__name__ == "MissionSpace"


@dataclass
class Leaf:
    src: str | None            # key in the raw Dict observation (None: the observation itself)
    kind: str                  # image | vector | tokens | audio
    space: Any                 # the raw gymnasium space
    shape: tuple               # output shape
    dtype: Any                 # output numpy dtype
    convert: Callable          # raw value (already validated) -> numpy array
    key: str = ""              # output key (filled in by plan_observation)
    low: Any = None
    high: Any = None


def _image_leaf(src, space: spaces.Box) -> Leaf | None:
    if space.dtype != np.uint8:
        return None
    shp = space.shape
    if len(shp) == 2:
        return Leaf(src, "image", space, (*shp, 1), np.uint8, lambda x: x[..., None])
    if len(shp) != 3:
        return None
    if shp[-1] in (1, 3, 4) or shp[-1] < min(shp[0], shp[1]):        # channels last (MinAtar: 10x10xC)
        return Leaf(src, "image", space, shp, np.uint8, lambda x: x)
    if shp[0] in (1, 3, 4) or shp[0] < min(shp[1], shp[2]):          # channels first
        return Leaf(src, "image", space, (shp[1], shp[2], shp[0]), np.uint8,
                    lambda x: np.ascontiguousarray(x.transpose(1, 2, 0)))
    return None


def _leaf(src, space, tokenizer: Tokenizer) -> Leaf:
    name = f"observation key '{src}'" if src is not None else "the observation"
    if src == "audio":
        if not (isinstance(space, spaces.Box) and len(space.shape) == 1):
            raise EnvError(f"{name} must be a 1-D Box waveform, got {space} — make 'audio' a Box of shape (N,)")
        return Leaf(src, "audio", space, space.shape, np.float32, lambda x: np.asarray(x, np.float32))
    if isinstance(space, spaces.Box):
        img = _image_leaf(src, space)
        if img is not None:
            return img
        d = int(np.prod(space.shape)) if space.shape else 1
        return Leaf(src, "vector", space, (d,), np.float32, lambda x: np.asarray(x, np.float32).reshape(-1))
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)
        eye = np.eye(n, dtype=np.float32)
        return Leaf(src, "vector", space, (n,), np.float32, lambda x: eye[int(x) - start].copy(), low=0.0, high=1.0)
    if isinstance(space, spaces.MultiBinary):
        d = int(np.prod(space.shape))
        return Leaf(src, "vector", space, (d,), np.float32, lambda x: np.asarray(x, np.float32).reshape(-1),
                    low=0.0, high=1.0)
    if isinstance(space, spaces.MultiDiscrete):
        nvec = space.nvec.reshape(-1).astype(np.int64)
        start = np.asarray(space.start).reshape(-1).astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        D = int(nvec.sum())

        def onehots(x):
            out = np.zeros(D, np.float32)
            out[offsets + (np.asarray(x).reshape(-1) - start)] = 1.0
            return out
        return Leaf(src, "vector", space, (D,), np.float32, onehots, low=0.0, high=1.0)
    if is_text_space(space):
        return Leaf(src, "tokens", space, (tokenizer.max_len,), np.int64, tokenizer.encode_numpy,
                    low=0, high=tokenizer.vocab_size - 1)
    raise EnvError(f"{name} has an unsupported space {type(space).__name__} ({space}) — supported: {SUPPORTED_OBS}")


def plan_observation(space, tokenizer: Tokenizer, drop: tuple = ()) -> list[Leaf]:
    """The list of output leaves for an observation space (raises EnvError when unsupported)."""
    if isinstance(space, spaces.Dict):
        leaves = []
        for k, sub in space.spaces.items():
            if k in drop:
                continue
            if isinstance(sub, (spaces.Dict, spaces.Tuple)):
                raise EnvError(f"observation key '{k}' is a nested {type(sub).__name__} — flatten it into "
                               f"top-level Dict keys (supported: {SUPPORTED_OBS})")
            leaves.append(_leaf(k, sub, tokenizer))
        if not leaves:
            raise EnvError("the observation Dict has no keys left to use — keep at least one observation")
        for lf in leaves:
            lf.key = str(lf.src)
    else:
        if isinstance(space, spaces.Tuple) or type(space).__name__ in ("Graph", "Sequence", "OneOf"):
            raise EnvError(f"observation space {type(space).__name__} is not supported — supported: {SUPPORTED_OBS}")
        lf = _leaf(None, space, tokenizer)
        lf.key = CANONICAL[lf.kind]
        leaves = [lf]
    seen = set()
    for lf in leaves:
        if lf.key in RESERVED:
            raise EnvError(f"observation key '{lf.src}' clashes with the reserved TensorDict key '{lf.key}' — "
                           "rename it in the env's observation Dict")
        if lf.key in seen:
            raise EnvError(f"two observation keys both become '{lf.key}' — rename the Dict key '{lf.src}'")
        seen.add(lf.key)
    return leaves


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"array shape {x.shape} dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:80]


def validate(leaf: Leaf, x) -> Any:
    """Check a raw observation value against its gymnasium space; returns the value (as numpy when numeric)."""
    sp = leaf.space
    where = f"observation '{leaf.src}'" if leaf.src is not None else "the observation"
    if isinstance(sp, spaces.Box):
        if not isinstance(x, np.ndarray):
            if isinstance(x, (float, int, np.number)) or (isinstance(x, (list, tuple)) and not leaf.kind == "image"):
                x = np.asarray(x)
            else:
                raise EnvError(f"{where} does not match its space: expected a numpy array of shape {sp.shape} "
                               f"dtype {sp.dtype}, got {_describe(x)} — return np.ndarray observations")
        if x.shape != sp.shape:
            raise EnvError(f"{where} does not match its space: expected shape {sp.shape} dtype {sp.dtype}, "
                           f"got shape {x.shape} dtype {x.dtype} — fix the env's observation or its observation_space")
        if leaf.kind == "image" and x.dtype != np.uint8:
            raise EnvError(f"{where} does not match its space: expected dtype uint8 shape {sp.shape}, got dtype "
                           f"{x.dtype} — return uint8 images (e.g. obs.astype(np.uint8))")
        if x.dtype.kind not in "biuf":
            raise EnvError(f"{where} does not match its space: expected numeric dtype {sp.dtype}, got {x.dtype}")
        if (sp.dtype.kind == "f") != (x.dtype.kind == "f"):     # float32 vs float64 is fine; int vs float is not
            raise EnvError(f"{where} does not match its space: expected dtype {sp.dtype} shape {sp.shape}, got dtype "
                           f"{x.dtype} — return obs.astype(np.{sp.dtype}) or declare the Box with dtype={x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x))[0]
            raise EnvError(f"{where} holds a non-finite value ({x[tuple(bad)]} at index {tuple(int(i) for i in bad)}) — "
                           "fix the env, or replace NaN/inf in it (e.g. np.nan_to_num)")
        return x
    if isinstance(sp, spaces.Discrete):
        if not isinstance(x, (int, np.integer)) and not (isinstance(x, np.ndarray) and x.shape == () and x.dtype.kind in "iu"):
            raise EnvError(f"{where} does not match its space: expected an integer for {sp}, got {_describe(x)}")
        if not sp.start <= int(x) < sp.start + sp.n:
            raise EnvError(f"{where} does not match its space: {int(x)} is outside {sp}")
        return x
    if isinstance(sp, (spaces.MultiBinary, spaces.MultiDiscrete)):
        x = np.asarray(x)
        if x.shape != tuple(sp.shape):
            raise EnvError(f"{where} does not match its space: expected shape {tuple(sp.shape)} for {sp}, got shape {x.shape}")
        return x
    if is_text_space(sp):
        if not isinstance(x, str):
            raise EnvError(f"{where} does not match its space: expected a str for {type(sp).__name__}, got {_describe(x)}")
        return x
    return x


class QuatrixObservation(gym.ObservationWrapper):
    """gymnasium wrapper: any supported observation -> {key: numpy array} per the data contract.

    Also checks that reset() returns (obs, info) and step() returns a 5-tuple, with a clear EnvError.
    """

    def __init__(self, env: gym.Env, tokenizer: Tokenizer | None = None, drop: tuple = ()):
        super().__init__(env)
        self.tokenizer = tokenizer or Tokenizer()
        self.leaves = plan_observation(env.observation_space, self.tokenizer, drop)
        self._is_dict = isinstance(env.observation_space, spaces.Dict)
        boxes = {}
        for lf in self.leaves:
            if lf.kind == "image":
                low, high = 0, 255
            elif lf.kind == "tokens":
                low, high = 0, self.tokenizer.vocab_size - 1
            elif lf.low is not None:
                low, high = lf.low, lf.high
            else:
                low = np.asarray(lf.space.low, np.float32).reshape(lf.shape) if isinstance(lf.space, spaces.Box) else -np.inf
                high = np.asarray(lf.space.high, np.float32).reshape(lf.shape) if isinstance(lf.space, spaces.Box) else np.inf
            boxes[lf.key] = spaces.Box(low=low, high=high, shape=lf.shape, dtype=lf.dtype)
        self.observation_space = spaces.Dict(boxes)
        self.kinds = {lf.key: lf.kind for lf in self.leaves}
        self._last_obs = None

    def observation(self, obs):
        if self._is_dict:
            if not isinstance(obs, dict):
                raise EnvError(f"the observation space is a Dict but the env returned {_describe(obs)} — return a dict")
            out = {}
            for lf in self.leaves:
                if lf.src not in obs:
                    raise EnvError(f"observation key '{lf.src}' is in the observation space but missing from the "
                                   f"observation (got keys {sorted(obs)}) — return every Dict key")
                out[lf.key] = lf.convert(validate(lf, obs[lf.src]))
        else:
            lf = self.leaves[0]
            out = {lf.key: lf.convert(validate(lf, obs))}
        self._last_obs = out      # for render_frame's pixels fallback
        return out

    def reset(self, *, seed=None, options=None):
        result = self.env.reset(seed=seed, options=options)
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            got = f"a {len(result)}-tuple" if isinstance(result, tuple) else type(result).__name__
            raise EnvError(f"reset() must return (obs, info); got {got} — return `obs, {{}}` from reset "
                           "(gymnasium>=0.26 API)")
        return self.observation(result[0]), result[1]

    def step(self, action):
        result = self.env.step(action)
        if not (isinstance(result, tuple) and len(result) == 5):
            got = f"a {len(result)}-tuple" if isinstance(result, tuple) else type(result).__name__
            raise EnvError(f"step() must return (obs, reward, terminated, truncated, info); got {got} — "
                           "use the gymnasium>=0.26 5-tuple API")
        obs, reward, terminated, truncated, info = result
        return self.observation(obs), reward, terminated, truncated, info
