"""Env throughput: raw gymnasium vs envs.make_env (torchrl), steps per second, single process.

    python bench/envs.py            # prints a table, writes bench/results/envs.json

Both loops take uniformly random actions and reset when an episode ends. The make_env loop is what
the trainer does per step: env.step(td) then step_mdp. "raw" for MiniGrid includes the same
RGBImgPartialObsWrapper rendering, so the ratio measures only our conversion + torchrl overhead.
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torchrl.envs.utils import step_mdp  # noqa: E402

from envs import make_env  # noqa: E402
from quatrix_world.files import write_json  # noqa: E402


def raw_env(spec: str):
    if spec.startswith("MiniGrid-"):
        from minigrid.wrappers import RGBImgPartialObsWrapper
        return RGBImgPartialObsWrapper(gym.make(spec, render_mode="rgb_array"), tile_size=8)
    return gym.make(spec)


def bench_raw(spec: str, steps: int) -> float:
    env = raw_env(spec)
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - t0)


def bench_made(spec: str, steps: int) -> float:
    env = make_env(spec, seed=0)
    n = env.quatrix_info.get("num_actions")
    gen = torch.Generator().manual_seed(0)
    td = env.reset()
    t0 = time.perf_counter()
    for _ in range(steps):
        td["action"] = torch.randint(n, (), generator=gen) if n else env.action_spec.rand()
        td = env.step(td)
        done = bool(td["next", "done"])
        td = step_mdp(td, exclude_action=True)
        if done:
            td = env.reset()
    return steps / (time.perf_counter() - t0)


def bench_rollout(spec: str, steps: int) -> float:
    env = make_env(spec, seed=0)
    t0 = time.perf_counter()
    env.rollout(steps, break_when_any_done=False)
    return steps / (time.perf_counter() - t0)


def main(quick: bool = False) -> list[dict]:
    torch.set_num_threads(1)
    cases = [("CartPole-v1", 5000), ("MiniGrid-Empty-6x6-v0", 3000), ("MiniGrid-DoorKey-5x5-v0", 3000),
             ("QuatrixWorld/ListenCorridor-v0", 3000)]
    rows = []
    for spec, steps in cases:
        if quick:
            steps //= 10
        bench_raw(spec, steps // 10), bench_made(spec, steps // 10)          # warm-up
        raw = float(np.median([bench_raw(spec, steps) for _ in range(3)]))
        made = float(np.median([bench_made(spec, steps) for _ in range(3)]))
        roll = bench_rollout(spec, steps)
        rows.append({"env": spec, "raw_steps_per_s": round(raw, 1), "make_env_steps_per_s": round(made, 1),
                     "rollout_steps_per_s": round(roll, 1), "ratio": round(made / raw, 3),
                     "overhead_us_per_step": round(1e6 / made - 1e6 / raw, 1)})
    print(f"{'env':<32} {'raw gym/s':>10} {'make_env/s':>11} {'rollout/s':>10} {'ratio':>6} {'+us/step':>9}")
    for r in rows:
        print(f"{r['env']:<32} {r['raw_steps_per_s']:>10.0f} {r['make_env_steps_per_s']:>11.0f} "
              f"{r['rollout_steps_per_s']:>10.0f} {r['ratio']:>6.2f} {r['overhead_us_per_step']:>9.0f}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "envs.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_json({"torch_threads": 1, "cpu_count": os.cpu_count(), "rows": rows}, out)
    print(f"-> {out}")
    return rows


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
