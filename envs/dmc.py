"""The DeepMind Control Suite from pixels: `make_env("dmc/<domain>-<task>")`, e.g. dmc/cartpole-swingup.

Every task of `dm_control.suite` is registered as `dmc/<domain>-<task>` (dmc/walker-walk,
dmc/ball_in_cup-catch, ...), with the protocol of DreamerV3's DMC env:

- observation: a 64x64 RGB uint8 frame rendered offscreen from camera 0 (camera 2 for quadruped,
  whose camera 0 is far away), as DreamerV3 picks; a lone Box, so the data contract calls it
  `pixels`. With `proprio=True` the observation is a Dict {"pixels", "proprio"}: "proprio" is every
  suite observation (positions, velocities, ...) flattened and concatenated in the suite's order,
  float32;
- actions: a Box in [-1, 1]^d, mapped linearly onto the task's own bounds (all suite tasks use
  [-1, 1]) and clipped to them;
- action repeat 2: an agent step applies its action for 2 control steps, rewards summed;
- the suite's time limit (1000 control steps for every task) ends an episode as truncation (500
  agent steps with repeat 2); a step whose discount is 0 would end it as termination;
- `reset(seed=s)` reseeds the task's RNG, so the initial state is the same for the same s.

Rendering goes through MuJoCo's OpenGL: MUJOCO_GL is set to `egl` when unset, which renders with
Mesa's software rasteriser on a machine without a GPU (and on the GPU where there is one). Without a
GPU a 64x64 frame costs ~50 ms, most of it the shadow maps: `shadows=False` leaves them out (~3x
faster; the frames then differ from DreamerV3's).
`dm_control` and `mujoco` are pinned as a pair in pyproject.toml: a newer mujoco breaks dm_control.
"""
from __future__ import annotations

import ctypes.util
import importlib.util
import math
import os

import gymnasium as gym
import numpy as np

from .errors import EnvError

PREFIX = "dmc/"
CAMERAS = {"quadruped": 2}           # DreamerV3's camera per domain; every other domain: camera 0
GL_LIBRARIES = {                     # MUJOCO_GL backend -> (libraries it loads, Debian packages with them)
    "egl": (("EGL", "OpenGL"), "libegl1 libegl-mesa0 libopengl0 libgl1-mesa-dri"),
    "osmesa": (("OSMesa",), "libosmesa6"),
}


def gl_backend() -> str:
    """MUJOCO_GL, set to 'egl' first when unset (before mujoco is imported, which reads it)."""
    return os.environ.setdefault("MUJOCO_GL", "egl").lower()


def check_gl(backend: str, find=ctypes.util.find_library) -> None:
    """EnvError naming the apt packages when a library the backend loads is not on this system."""
    libs, packages = GL_LIBRARIES.get(backend, ((), ""))
    missing = [lib for lib in libs if find(lib) is None]
    if missing:
        raise EnvError(f"DMC renders offscreen with MUJOCO_GL={backend}, but lib{missing[0]} is not installed — "
                       f"apt-get install {packages}")


def load_suite():
    """dm_control.suite, with the GL backend set up, or one EnvError saying what to install."""
    if importlib.util.find_spec("dm_control") is None:
        raise EnvError('DMC envs need the \'dm_control\' package — pip install -e ".[dmc]" '
                       "(or pip install quatrix-world[dmc])")
    backend = gl_backend()
    check_gl(backend)
    try:
        from dm_control import suite
    except (ImportError, OSError, RuntimeError) as e:
        packages = GL_LIBRARIES.get(backend, ((), "the OpenGL libraries of your platform"))[1]
        raise EnvError(f"DMC renders offscreen with MUJOCO_GL={backend}, which failed to start "
                       f"({type(e).__name__}: {e}) — apt-get install {packages}, or set MUJOCO_GL=osmesa "
                       "(apt-get install libosmesa6)") from e
    return suite


class DMCEnv(gym.Env):
    """One `dm_control.suite` task from pixels; see the module docstring for the protocol.

    size: the frame's side in pixels; action_repeat: control steps per agent step; camera: the
    camera id (None: DreamerV3's choice); proprio: also observe the state vector; shadows: False
    skips the shadow maps (faster software rendering); render_size: the side of `render()` frames
    (default: size).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, domain: str, task: str, size: int = 64, action_repeat: int = 2, camera: int | None = None,
                 proprio: bool = False, shadows: bool = True, render_mode: str | None = None,
                 render_size: int | None = None):
        for name, v in (("size", size), ("action_repeat", action_repeat), ("render_size", render_size or 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise EnvError(f"DMC option {name} must be a positive int, got {v!r}")
        if render_mode not in (None, "rgb_array"):
            raise EnvError(f"DMC renders only render_mode='rgb_array', got {render_mode!r}")
        suite = load_suite()
        self._env = suite.load(domain, task)
        self.domain, self.task = domain, task
        self.size, self.action_repeat, self.proprio = int(size), int(action_repeat), bool(proprio)
        self.render_mode, self.render_size = render_mode, int(render_size or size)
        if not shadows:
            self._env.physics.model.vis.quality.shadowsize = 0
        ncam = int(self._env.physics.model.ncam)
        camera = CAMERAS.get(domain, 0) if camera is None else camera
        if isinstance(camera, bool) or not isinstance(camera, (int, np.integer)) or not 0 <= camera < ncam:
            raise EnvError(f"DMC camera must be an int in [0, {ncam - 1}] for {domain}, got {camera!r} "
                           "(or None for DreamerV3's camera)")
        self.camera = int(camera)
        spec = self._env.action_spec()
        self._low = np.broadcast_to(np.asarray(spec.minimum, np.float64), spec.shape)
        self._high = np.broadcast_to(np.asarray(spec.maximum, np.float64), spec.shape)
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        image = gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)
        if self.proprio:
            dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
            state = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
            self.observation_space = gym.spaces.Dict({"pixels": image, "proprio": state})
        else:
            self.observation_space = image
        limit = float(getattr(self._env, "_step_limit", math.inf))
        self.max_steps = math.ceil(limit / self.action_repeat) if math.isfinite(limit) else None   # make_env reads it
        self.metadata = {**self.metadata,
                         "render_fps": round(1.0 / (self._env.control_timestep() * self.action_repeat))}
        self._frame = None

    def _observe(self, time_step):
        self._frame = self._render(self.size)
        if not self.proprio:
            return self._frame
        state = np.concatenate([np.asarray(v, np.float32).reshape(-1) for v in time_step.observation.values()])
        return {"pixels": self._frame, "proprio": state}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(int(seed) % 2 ** 32)
        return self._observe(self._env.reset()), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64).reshape(self._low.shape), -1.0, 1.0)
        a = self._low + (a + 1.0) * (self._high - self._low) / 2.0
        reward = 0.0
        for _ in range(self.action_repeat):
            time_step = self._env.step(a)
            reward += float(time_step.reward or 0.0)
            if time_step.last():
                break
        terminated = bool(time_step.last() and time_step.discount == 0)
        truncated = bool(time_step.last() and not terminated)
        return self._observe(time_step), reward, terminated, truncated, {"discount": float(time_step.discount)}

    def render(self):
        if self.render_size == self.size and self._frame is not None:
            return self._frame
        return self._render(self.render_size)

    def _render(self, side: int) -> np.ndarray:
        return np.ascontiguousarray(self._env.physics.render(side, side, camera_id=self.camera))   # it comes flipped

    def close(self):
        self._env.physics.free()          # the GL context now, not at interpreter exit
        super().close()


def register_envs() -> None:
    """Register `dmc/<domain>-<task>` for every task of dm_control.suite."""
    suite = load_suite()
    for domain, task in suite.ALL_TASKS:
        env_id = f"{PREFIX}{domain}-{task}"
        if env_id not in gym.registry:
            gym.register(env_id, entry_point="envs.dmc:DMCEnv", kwargs={"domain": domain, "task": task},
                         disable_env_checker=True)
