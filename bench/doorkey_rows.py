"""DoorKey-5x5 by door row: where a trained checkpoint's policy and world model stand (benchmark, not a test).

    python bench/doorkey_rows.py RUN_OR_CHECKPOINT [...] --episodes 40 --layouts 40 \
        --out bench/results/doorkey_rows.json

MiniGrid-DoorKey-5x5 puts the door at row 1 or row 2 of the wall column. For each checkpoint:

- **policy**: fresh episodes with sampled actions (seeds 50,000,000 + i); the share solved per door row.
- **world model**: on fresh layouts (seeds 60,000,000 + i) a scripted path — pick the key, stand west of
  the door facing it, then toggle, walk through and down to the goal. The model observes the real frames
  up to facing the door, then predicts open loop along the rest of the path; the largest reward it
  predicts there is reported per door row (the real one is ~0.95).

A policy that learned one door row scores about half; the world-model column tells whether the model
has learned that the other row's path is rewarded too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torchrl.envs.utils import step_mdp

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.api import load                                # noqa: E402
from agents.policy import episode_batch                    # noqa: E402
from agents.rollout import write_json                      # noqa: E402

LEFT, RIGHT, FORWARD, PICKUP, TOGGLE = 0, 1, 2, 3, 5
EAST, SOUTH, NORTH = 0, 1, 3


def where(grid, kind: str) -> tuple[int, int]:
    """(x, y) of the first object of `kind` in a MiniGrid grid."""
    i = next(i for i, o in enumerate(grid.grid) if o is not None and o.type == kind)
    return i % grid.width, i // grid.width


def turn(d: int, want: int) -> tuple[list, int]:
    """The shortest turn from direction d to `want` (0 east, 1 south, 2 west, 3 north; right = +1)."""
    if (want - d) % 4 == 3:
        return [LEFT], want
    return [RIGHT] * ((want - d) % 4), want


def scripted_path(u) -> tuple[list, list]:
    """-> (actions up to facing the door with the key, the rest of the way to the goal at (3, 3)).
    The 5x5 layout: the agent and the key in column 1, the door in column 2, the goal at (3, 3)."""
    y, d = int(u.agent_pos[1]), int(u.agent_dir)
    key_y, door_y = where(u.grid, "key")[1], where(u.grid, "door")[1]
    way = SOUTH if key_y > y else NORTH
    acts, d = turn(d, way)
    while abs(key_y - y) > 1:
        acts.append(FORWARD)
        y += 1 if way == SOUTH else -1
    acts.append(PICKUP)
    if door_y != y:
        way = SOUTH if door_y > y else NORTH
        a, d = turn(d, way)
        acts += a
        while y != door_y:
            acts.append(FORWARD)
            y += 1 if way == SOUTH else -1
    a, d = turn(d, EAST)
    acts += a
    rest = [TOGGLE, FORWARD, FORWARD]
    a, d = turn(d, SOUTH)
    return acts, rest + a + [FORWARD] * (3 - door_y)


def policy_by_row(run, episodes: int) -> dict:
    env, u = run.env, run.env.gym_env.unwrapped
    rows: dict = {}
    for i in range(episodes):
        ep = run.episode(50_000_000 + i)
        rows.setdefault(where(u.grid, "door")[1], []).append(ep["return"] > 0)
    return {str(r): {"episodes": len(v), "solved": sum(v)} for r, v in sorted(rows.items())}


@torch.no_grad()
def world_by_row(run, layouts: int) -> dict:
    env, world, u = run.env, run.world, run.env.gym_env.unwrapped
    rows: dict = {}
    for i in range(layouts):
        env.set_seed(60_000_000 + i)
        td = env.reset()
        before, after = scripted_path(u)
        obs, real = [{k: td[k] for k in world.obs_desc}], 0.0
        for a in before + after:
            td["action"] = torch.tensor(a).to(env.action_spec.dtype).reshape(env.action_spec.shape)
            td = env.step(td)
            real = float(td["next", "reward"])
            obs.append({k: td["next", k] for k in world.obs_desc})
            if bool(td["next", "done"]):
                break
            td = step_mdp(td)
        if real <= 0:
            raise RuntimeError(f"the scripted path did not reach the goal on layout {i} — is this MiniGrid-DoorKey-5x5?")
        actions = [torch.tensor(a) for a in before + after]
        k = len(before) + 1                               # frames observed: up to facing the door
        state = world.observe(episode_batch({"obs": obs, "actions": actions}, k, world), sample=False)
        predicted = []
        for a in actions[k - 1:]:
            state = world.step(state, a[None])
            predicted.append(float(state["reward"][0]))
        rows.setdefault(where(u.grid, "door")[1], []).append((max(predicted), real))
    return {str(r): {"layouts": len(v), "predicted_max_median": statistics.median(p for p, _ in v),
                     "predicted_max": [round(p, 3) for p, _ in v], "real_median": statistics.median(r for _, r in v)}
            for r, v in sorted(rows.items())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", help="run folders or checkpoints of MiniGrid-DoorKey-5x5 runs")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--layouts", type=int, default=40)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    results = {}
    for path in a.runs:
        run = load(path, seed=0)
        if not run.cfg.env.id.startswith("MiniGrid-DoorKey-5x5"):
            sys.exit(f"{path} is a {run.cfg.env.id} run; this probe reads MiniGrid-DoorKey-5x5 layouts")
        r = {"policy": policy_by_row(run, a.episodes), "world": world_by_row(run, a.layouts)}
        results[path] = r
        for row in sorted(set(r["policy"]) | set(r["world"])):
            pol, wm = r["policy"].get(row, {}), r["world"].get(row, {})
            print(f"{path}  door row {row}: policy solved {pol.get('solved')}/{pol.get('episodes')}, world model's "
                  f"largest predicted reward on the scripted path (median of {wm.get('layouts')}): "
                  f"{wm.get('predicted_max_median', float('nan')):.3f} (real {wm.get('real_median', float('nan')):.3f})",
                  flush=True)
        if a.out:
            write_json(results, a.out)


if __name__ == "__main__":
    main()
