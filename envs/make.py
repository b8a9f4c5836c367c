"""make_env: any gymnasium env (id, "module:Name", instance or class) -> a torchrl EnvBase.

The conversion is ours end to end: `QuatrixObservation` (a gymnasium.ObservationWrapper) turns the
observation into the data contract's numpy arrays, and `QuatrixEnv` (a small torchrl EnvBase) turns
those into TensorDicts. A custom EnvBase instead of GymWrapper + InitTracker keeps the per-step
overhead low (no spec guessing, no transform stack) and produces the same keys:

    reset -> {obs keys, is_init=True, done/terminated/truncated=False}
    step  -> next: {obs keys, reward float32[1], terminated/truncated/done bool[1], is_init=False}
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import warnings

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from .convert import QuatrixObservation
from .errors import EnvError, suggest, suggest_env_id
from .families import FAMILIES, family_of, family_options
from .tokenizer import Tokenizer

SUPPORTED_ACTIONS = "Discrete (-> Categorical int64 []) or Box (-> Bounded float32 [d])"
ENV_OPTIONS = ("clip_nonfinite_reward", "tokenizer", "render_mode", "drop_keys")
_BOOL1 = (1,)


# ----------------------------------------------------------------------------- building the gym env

def _ensure_registered() -> None:
    """Make sure the MiniGrid ids and our example ids are in gymnasium's registry."""
    try:
        import minigrid  # noqa: F401  (registers MiniGrid-* ids)
    except ImportError:  # pragma: no cover
        pass
    from .examples import register_examples
    register_examples()


def _from_callable(obj, spec_str: str, kwargs: dict) -> gym.Env:
    try:
        env = obj(**kwargs)
    except TypeError as e:
        raise EnvError(f"could not construct {spec_str}: {e} — check the options passed to make_env") from e
    if not isinstance(env, gym.Env):
        raise EnvError(f"{spec_str} returned {type(env).__name__}, not a gymnasium.Env — return a gymnasium.Env "
                       "(or pass a gymnasium.Env subclass)")
    return env


def _import_spec(spec: str, kwargs: dict) -> gym.Env:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise EnvError(f"env spec '{spec}' is not 'package.module:Name' — write it like 'my_pkg.envs:MyEnv'")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise EnvError(f"cannot import module '{mod_name}' for env spec '{spec}': {e} — check the module path "
                       "and that it is importable (on sys.path / installed)") from e
    if not hasattr(module, attr):
        names = [n for n in dir(module) if not n.startswith("_")]
        raise EnvError(f"module '{mod_name}' has no attribute '{attr}'{suggest(attr, names) or ' — check the name'}")
    obj = getattr(module, attr)
    if not callable(obj):
        raise EnvError(f"'{spec}' is a {type(obj).__name__}, not a gymnasium.Env class or a callable returning one")
    return _from_callable(obj, f"'{spec}'", kwargs)


def build_gym_env(spec, max_episode_steps=None, render_mode="rgb_array", **kwargs) -> tuple[gym.Env, str, tuple]:
    """-> (gymnasium env, spec string, observation keys to drop)."""
    drop: tuple = ()
    if isinstance(spec, str):
        if ":" in spec:
            env = _import_spec(spec, kwargs)
            spec_str = spec
        else:
            family = family_of(spec)
            if family is not None:
                family.register()
                kwargs = {**family.make_kwargs, **kwargs}
            _ensure_registered()
            if spec not in gym.registry:
                raise EnvError(f"unknown env id '{spec}'{suggest_env_id(spec, gym.registry.keys())} — use a registered "
                               "gymnasium id, 'package.module:Name', a gymnasium.Env instance or class")
            spec_str = spec
            fam_opts = {k: kwargs.pop(k) for k in family_options() if k in kwargs}
            unknown = sorted(set(fam_opts) - set(family.options if family else ()))
            if unknown:
                owners = sorted(f.name for f in FAMILIES if set(unknown) & set(f.options))
                raise EnvError(f"options {unknown} only apply to {', '.join(owners)} envs, not '{spec}' — remove them")
            try:
                env = gym.make(spec, render_mode=render_mode, disable_env_checker=True, **kwargs)
            except TypeError as e:
                if render_mode is None:
                    raise EnvError(f"could not make '{spec}': {e} — check the options passed to make_env") from e
                try:   # some envs take no render_mode
                    env = gym.make(spec, disable_env_checker=True, **kwargs)
                except TypeError as e2:
                    raise EnvError(f"could not make '{spec}': {e2} — check the options passed to make_env") from e2
            if family is not None:
                env, drop = family.wrap(env, {**family.options, **fam_opts})
    elif isinstance(spec, gym.Env):
        if kwargs:
            raise EnvError(f"options {sorted(kwargs)} cannot be applied to an env instance — pass the class or id instead")
        env, spec_str = spec, ""
    elif inspect.isclass(spec) and issubclass(spec, gym.Env):
        if render_mode is not None and "render_mode" in inspect.signature(spec.__init__).parameters:
            kwargs.setdefault("render_mode", render_mode)
        env = _from_callable(spec, spec.__name__, kwargs)
        spec_str = f"{spec.__module__}:{spec.__qualname__}"
    else:
        raise EnvError(f"cannot make an env from {type(spec).__name__} {spec!r} — pass a gymnasium id, "
                       "'package.module:Name', a gymnasium.Env instance or a gymnasium.Env class")
    if max_episode_steps is not None:
        if int(max_episode_steps) <= 0:
            raise EnvError(f"max_episode_steps must be positive, got {max_episode_steps}")
        env = gym.wrappers.TimeLimit(env, max_episode_steps=int(max_episode_steps))
    return env, spec_str, drop


def _episode_limit(env: gym.Env):
    e = env
    while e is not None:
        if isinstance(e, gym.wrappers.TimeLimit):
            return int(e._max_episode_steps)
        e = getattr(e, "env", None)
    spec = getattr(env, "spec", None)
    limit = getattr(spec, "max_episode_steps", None) if spec is not None else None
    if limit is None:   # MiniGrid truncates internally at unwrapped.max_steps
        limit = getattr(env.unwrapped, "max_steps", None)
    return int(limit) if isinstance(limit, (int, np.integer)) else None


# ----------------------------------------------------------------------------- the torchrl env

def action_spec_for(space) -> tuple:
    """-> (torchrl spec, kind, info dict, numpy converter)."""
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)
        return (Categorical(n, shape=(), dtype=torch.int64), "discrete", {"num_actions": n},
                lambda a: int(a) + start)
    if isinstance(space, spaces.Box):
        shape, dtype = space.shape, space.dtype
        d = int(np.prod(shape)) if shape else 1
        low = np.asarray(space.low, np.float32).reshape(-1)
        high = np.asarray(space.high, np.float32).reshape(-1)
        if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise EnvError(f"action space {space} is unbounded — the actor acts in env units inside the box, so it "
                           "needs finite bounds: declare Box(low, high) with finite values, or wrap the env "
                           "(e.g. gymnasium.wrappers.RescaleAction) to a finite range")
        spec = Bounded(low=torch.from_numpy(low), high=torch.from_numpy(high), shape=(d,), dtype=torch.float32)
        return spec, "continuous", {"action_dim": d}, lambda a: a.detach().cpu().numpy().reshape(shape).astype(dtype)
    raise EnvError(f"action space {type(space).__name__} ({space}) is not supported — supported: {SUPPORTED_ACTIONS}; "
                   "wrap the env to expose one of these")


def _obs_spec(space: spaces.Box, kind: str):
    dtype = {"image": torch.uint8, "tokens": torch.int64}.get(kind, torch.float32)
    if kind in ("image", "tokens"):
        return Bounded(low=int(np.min(space.low)), high=int(np.max(space.high)), shape=space.shape, dtype=dtype)
    return Unbounded(shape=space.shape, dtype=dtype)


def _td(d: dict) -> TensorDict:
    """A TensorDict of our own (already checked) tensors without tensordict's per-entry validation."""
    new_unsafe = getattr(TensorDict, "_new_unsafe", None)
    if new_unsafe is not None:
        return new_unsafe(d, batch_size=torch.Size(()), device=None)
    return TensorDict(d, batch_size=())


class QuatrixEnv(EnvBase):
    """A torchrl env around a gymnasium env (already wrapped by QuatrixObservation).

    `set_seed(s)` makes the *next* reset call `reset(seed=s)` (and seeds the action space), so
    `env.set_seed(s); env.reset()` is reproducible. Attributes: `gym_env`, `quatrix_info`, `tokenizer`.
    """

    def __init__(self, gym_env: QuatrixObservation, spec_str: str = "", max_episode_steps=None,
                 clip_nonfinite_reward: bool = False):
        super().__init__(device="cpu", batch_size=torch.Size([]))
        self.gym_env = gym_env
        self.tokenizer = gym_env.tokenizer
        self.clip_nonfinite_reward = bool(clip_nonfinite_reward)
        self._keys = [lf.key for lf in gym_env.leaves]
        obs = {k: _obs_spec(gym_env.observation_space[k], gym_env.kinds[k]) for k in self._keys}
        obs["is_init"] = Categorical(2, shape=_BOOL1, dtype=torch.bool)
        self.observation_spec = Composite(obs, shape=())
        aspec, akind, ainfo, self._to_np = action_spec_for(gym_env.action_space)
        self.action_spec = aspec
        self.reward_spec = Unbounded(shape=_BOOL1, dtype=torch.float32)
        self.done_spec = Composite(
            done=Categorical(2, shape=_BOOL1, dtype=torch.bool),
            terminated=Categorical(2, shape=_BOOL1, dtype=torch.bool),
            truncated=Categorical(2, shape=_BOOL1, dtype=torch.bool), shape=())
        self.quatrix_info = {"obs_kinds": dict(gym_env.kinds), "action_kind": akind, **ainfo,
                             "spec_str": spec_str, "max_episode_steps": max_episode_steps,
                             "tokenizer": self.tokenizer.to_dict(),
                             # an audio key's sample rate: the env's metadata["audio_sample_rate"] (Hz)
                             "audio_sample_rate": gym_env.unwrapped.metadata.get("audio_sample_rate")}
        self._next_seed = None
        self._t = 0                 # steps since the last reset
        self._total = 0             # steps since creation
        self._false = torch.zeros(1, dtype=torch.bool)
        self._true = torch.ones(1, dtype=torch.bool)

    # -- torchrl hooks
    def _set_seed(self, seed):
        self._next_seed = None if seed is None else int(seed)
        if seed is not None:
            self.gym_env.action_space.seed(int(seed))

    def _obs_td(self, obs: dict, init: bool) -> dict:
        out = {k: torch.from_numpy(obs[k]) for k in self._keys}
        out["is_init"] = self._true.clone() if init else self._false.clone()
        return out

    def _reset(self, tensordict=None, **kwargs):
        seed, self._next_seed = self._next_seed, None
        obs, _ = self.gym_env.reset(seed=seed)
        self._t = 0
        out = self._obs_td(obs, True)
        out["done"] = self._false.clone()
        out["terminated"] = self._false.clone()
        out["truncated"] = self._false.clone()
        return _td(out)

    def _step(self, tensordict: TensorDictBase):
        action = self._to_np(tensordict.get("action"))
        obs, reward, terminated, truncated, _ = self.gym_env.step(action)
        try:
            r = float(reward)
        except (TypeError, ValueError) as e:
            raise EnvError(f"step {self._t} returned reward {reward!r} ({type(reward).__name__}) — return a float") from e
        if not math.isfinite(r):
            if not self.clip_nonfinite_reward:
                raise EnvError(f"non-finite reward {r} at step {self._t} of the episode (step {self._total} overall) — "
                               "fix the env or pass clip_nonfinite_reward=True to make_env (NaN->0, ±inf->±1e6)")
            r = 0.0 if math.isnan(r) else math.copysign(1e6, r)
        self._t += 1
        self._total += 1
        term, trunc = bool(terminated), bool(truncated)
        out = self._obs_td(obs, False)
        out["reward"] = torch.tensor([r], dtype=torch.float32)
        out["terminated"] = self._true.clone() if term else self._false.clone()
        out["truncated"] = self._true.clone() if trunc else self._false.clone()
        out["done"] = self._true.clone() if (term or trunc) else self._false.clone()
        return _td(out)

    # -- extras
    def render_frame(self) -> np.ndarray:
        return render_frame(self)

    def close(self, *, raise_if_closed: bool = True):
        try:
            self.gym_env.close()
        finally:
            try:
                super().close(raise_if_closed=raise_if_closed)
            except TypeError:   # older signature
                super().close()

    def __repr__(self) -> str:
        info = self.quatrix_info
        return f"QuatrixEnv({info['spec_str'] or type(self.gym_env.unwrapped).__name__}, obs={info['obs_kinds']}, action={info['action_kind']})"


def _headless_sdl() -> None:
    """Without a display, rgb_array rendering through pygame works with SDL's dummy driver (and SDL
    does not print "error: XDG_RUNTIME_DIR is invalid", which reads like one of our errors)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def make_env(spec, *, seed=None, num_envs: int = 1, parallel: bool = False, max_episode_steps=None,
             **options) -> EnvBase:
    """Make a torchrl env following the Quatrix data contract.

    spec: a registered gymnasium id ("CartPole-v1", "MiniGrid-Empty-6x6-v0", "QuatrixWorld/ListenCorridor-v0"),
    "package.module:Name" (a gymnasium.Env subclass or a callable returning one), a gymnasium.Env instance,
    or a gymnasium.Env class. options: `full_view`, `tile_size` (MiniGrid), `clip_nonfinite_reward`,
    `tokenizer` (a Tokenizer), `render_mode`, `drop_keys` (Dict observation keys to leave out, e.g.
    ("mission",) for an ablation); anything else goes to the env constructor / gymnasium.make.
    num_envs > 1 gives a batched env of that many copies: torchrl's SerialEnv (in this process) or,
    with parallel=True, its ParallelEnv (one worker process per copy).
    """
    if not isinstance(num_envs, int) or num_envs < 1:
        raise EnvError(f"num_envs must be a positive int, got {num_envs!r}")
    _headless_sdl()
    if num_envs > 1:
        if isinstance(spec, gym.Env):
            raise EnvError("num_envs>1 needs an id, 'module:Name' or an Env class, not an env instance — "
                           "pass the class so each copy is its own env")
        from torchrl.envs import ParallelEnv, SerialEnv
        first = make_env(spec, seed=None, max_episode_steps=max_episode_steps, **options)
        info = first.quatrix_info
        first.close()
        one = functools.partial(make_env, spec, max_episode_steps=max_episode_steps, **options)   # picklable
        env = (ParallelEnv if parallel else SerialEnv)(num_envs, one)
        env.quatrix_info = dict(info, num_envs=num_envs)
        if seed is not None:
            env.set_seed(int(seed))
        return env
    opts = dict(options)
    clip = bool(opts.pop("clip_nonfinite_reward", False))
    tokenizer = opts.pop("tokenizer", None) or Tokenizer()
    render_mode = opts.pop("render_mode", "rgb_array")
    drop_keys = tuple(str(k) for k in opts.pop("drop_keys", ()))
    gym_env, spec_str, drop = build_gym_env(spec, max_episode_steps=max_episode_steps, render_mode=render_mode, **opts)
    if drop_keys:
        space = gym_env.observation_space
        keys = list(space.spaces) if isinstance(space, spaces.Dict) else []
        missing = [k for k in drop_keys if k not in keys]
        if missing:
            raise EnvError(f"env.drop_keys {missing} are not keys of the observation Dict (its keys: "
                           f"{[k for k in keys if k not in drop] or 'none, it is not a Dict'}) — drop only keys it has")
    wrapped = QuatrixObservation(gym_env, tokenizer, drop=drop + drop_keys)
    env = QuatrixEnv(wrapped, spec_str, _episode_limit(gym_env), clip_nonfinite_reward=clip)
    if seed is not None:
        env.set_seed(int(seed))
    return env


# ----------------------------------------------------------------------------- rendering

def _as_rgb(frame) -> np.ndarray | None:
    if frame is None:
        return None
    f = np.asarray(frame)
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=-1)
    if f.ndim != 3 or f.shape[-1] not in (1, 3, 4):
        return None
    if f.shape[-1] == 1:
        f = np.repeat(f, 3, axis=-1)
    f = f[..., :3]
    if f.dtype != np.uint8:
        f = np.clip(f * (255 if f.dtype.kind == "f" and f.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(f)


def render_frame(env) -> np.ndarray:
    """An RGB uint8 [H, W, 3] frame: the gymnasium env's render() if it gives rgb_array, else the last pixels."""
    inner = env
    while not isinstance(inner, QuatrixEnv):
        nxt = getattr(inner, "base_env", None)          # through torchrl TransformedEnv
        if nxt is None and env.batch_size:
            raise EnvError(f"a batched env ({type(env).__name__}, batch {list(env.batch_size)}) has no single frame "
                           "— render an env made with num_envs=1")
        if nxt is None or nxt is inner:
            raise EnvError(f"env {type(env).__name__} cannot render: it was not made by envs.make_env")
        inner = nxt
    name = inner.quatrix_info["spec_str"] or type(inner.gym_env.unwrapped).__name__
    reason = "render_mode is not 'rgb_array'"
    if getattr(inner.gym_env, "render_mode", None) == "rgb_array":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = _as_rgb(inner.gym_env.render())
            if frame is not None:
                return frame
            reason = "render() returned no RGB array"
        except Exception as e:   # render before reset etc.
            reason = f"render() failed ({type(e).__name__}: {e})"
    for k, kind in inner.quatrix_info["obs_kinds"].items():
        if kind == "image":
            last = getattr(inner.gym_env, "_last_obs", None)
            if last is not None:
                return _as_rgb(last[k])
            reason += "; no pixels yet (call reset() first)"
    raise EnvError(f"env {name} cannot render: {reason} and it has no pixels observation — make it with "
                   "render_mode='rgb_array' support or an image observation")
