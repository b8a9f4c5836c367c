"""check_env: will this environment work with Quatrix World? A report, or one clear EnvError."""
from __future__ import annotations

import math
import re
import warnings

import numpy as np

from .convert import QuatrixObservation
from .errors import EnvError
from .make import action_spec_for, build_gym_env, _episode_limit
from .tokenizer import Tokenizer

ENCODERS = {"image": "QuatrixVision", "vector": "MLP", "tokens": "QuatrixLM", "audio": "QuatrixAudio"}


def _gym_checker(env, name: str) -> list[str]:
    """gymnasium's own env checker; its failures become EnvError, its warnings are returned."""
    from gymnasium.utils.env_checker import check_env as gym_check_env
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            gym_check_env(env, skip_render_check=True, skip_close_check=True)
        except EnvError:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EnvError(f"gymnasium's env checker rejected {name}: {msg} — fix the env to follow the "
                           "gymnasium API") from e
    out = []
    for w in caught:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(w.message)).strip().splitlines()[0].removeprefix("WARN: ")
        if "different from the unwrapped version" in text:   # we check the wrapped env on purpose
            continue
        if text and text not in out:
            out.append(text)
    return out


def check_env(spec, *, steps: int = 32, seed: int = 0, gym_checker: bool = True, **options) -> dict:
    """Instantiate the env, run gymnasium's checker and ours; -> report dict (see format_report).

    Ours: spaces supported, observations match their spaces over `steps` random steps, rewards finite,
    reset() -> (obs, info) and step() -> 5-tuple, reset(seed=0) twice gives the same observation.
    """
    opts = dict(options)
    opts.pop("clip_nonfinite_reward", None)
    tokenizer = opts.pop("tokenizer", None) or Tokenizer()
    max_steps = opts.pop("max_episode_steps", None)
    render_mode = opts.pop("render_mode", "rgb_array")
    gym_env, spec_str, drop = build_gym_env(spec, max_episode_steps=max_steps, render_mode=render_mode, **opts)
    name = spec_str or type(gym_env.unwrapped).__name__
    env = QuatrixObservation(gym_env, tokenizer, drop=drop)        # unsupported observation -> EnvError
    _, akind, ainfo, to_np = action_spec_for(gym_env.action_space)  # unsupported action -> EnvError

    # reset tuple, seeding, observations vs spaces, rewards
    obs0, _ = env.reset(seed=seed)
    obs1, _ = env.reset(seed=seed)
    for k in obs0:
        if not np.array_equal(obs0[k], obs1[k]):
            raise EnvError(f"{name} is not reproducible: reset(seed={seed}) twice gave different '{k}' — seed all "
                           "randomness from self.np_random (call super().reset(seed=seed) in reset)")
    env.action_space.seed(seed)
    t = 0
    for i in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        try:
            r = float(reward)
        except (TypeError, ValueError) as e:
            raise EnvError(f"{name} step {t} returned reward {reward!r} — return a float") from e
        if not math.isfinite(r):
            raise EnvError(f"{name} returned non-finite reward {r} at step {t} of an episode — fix the env or pass "
                           "clip_nonfinite_reward=True to make_env")
        t += 1
        if terminated or truncated:
            env.reset()
            t = 0

    warns = _gym_checker(gym_env, name) if gym_checker else []
    keys = {}
    for lf in env.leaves:
        sp = env.observation_space[lf.key]
        d = {"shape": list(sp.shape), "dtype": str(np.dtype(lf.dtype)), "kind": lf.kind, "encoder": ENCODERS[lf.kind],
             "source": lf.src if lf.src is not None else type(lf.space).__name__}
        if lf.kind == "tokens":
            d["vocab"] = tokenizer.vocab_size
        keys[lf.key] = d
    action = {"kind": akind, **ainfo}
    if akind == "continuous":
        action["low"] = np.asarray(gym_env.action_space.low, np.float64).reshape(-1).tolist()
        action["high"] = np.asarray(gym_env.action_space.high, np.float64).reshape(-1).tolist()
    report = {"spec": name, "keys": keys, "action": action, "max_episode_steps": _episode_limit(gym_env),
              "dropped": list(drop), "warnings": warns, "ok": True}
    try:
        gym_env.close()
    except Exception:
        pass
    return report


def format_report(report: dict) -> str:
    """One line per observation key with its encoder, then the action; warnings last."""
    lines = [f"env {report['spec']}: OK" if report.get("ok") else f"env {report['spec']}: FAILED"]
    for k, d in report["keys"].items():
        extra = f" vocab {d['vocab']}" if "vocab" in d else ""
        lines.append(f"  obs  {k:<12} {d['kind']:<7} {d['dtype']:<8} {str(tuple(d['shape'])):<14}{extra} -> {d['encoder']}"
                     f"  (from {d['source']})")
    a = report["action"]
    if a["kind"] == "discrete":
        lines.append(f"  action discrete, {a['num_actions']} actions -> categorical policy")
    else:
        lines.append(f"  action continuous, dim {a['action_dim']} in [{min(a['low']):g}, {max(a['high']):g}] -> "
                     "Gaussian policy")
    if report.get("max_episode_steps"):
        lines.append(f"  episodes cut at {report['max_episode_steps']} steps")
    if report.get("dropped"):
        lines.append(f"  dropped keys: {', '.join(report['dropped'])}")
    for w in report.get("warnings", []):
        lines.append(f"  warning (gymnasium checker): {w}")
    return "\n".join(lines)
