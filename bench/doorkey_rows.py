"""DoorKey-5x5 by door row: which layouts a trained checkpoint's policy solves (benchmark, not a test).

    python bench/doorkey_rows.py RUN_OR_CHECKPOINT [...] --episodes 40 --out bench/results/doorkey_rows.json
    python bench/doorkey_rows.py RUN_OR_CHECKPOINT [...] --imagine 64 --out bench/results/doorkey_imagined.json

MiniGrid-DoorKey-5x5 puts the door at row 1 or row 2 of the wall column. Each checkpoint plays fresh
episodes with sampled actions (seeds 50,000,000 + i, the same layouts for every checkpoint) and this
reports how many it solved per door row. A policy that learned the way through one door row only
scores about half of the threshold's 0.9.

With --imagine G it also asks whether the world model's imagined wins are real, per door row: after
`agent.context_len` real steps of each episode, the actor imagines G branches of `agent.horizon` steps
(as in training); every branch whose predicted reward (weighted by the predicted continuation) sums
to more than 0.5 is an imagined win, and its actions up to the step where that sum passed 0.5 are replayed
in the real env from the same state (MiniGrid is deterministic given the reset seed). A win the env does not give is the model's error
that the actor learns from.
"""
from __future__ import annotations

import argparse
import os
import sys

import gymnasium as gym
import minigrid  # noqa: F401  (registers the MiniGrid ids with gymnasium)
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.api import load                                # noqa: E402
from agents.policy import episode_batch                    # noqa: E402
from agents.rollout import write_json                      # noqa: E402


def where(grid, kind: str) -> tuple[int, int]:
    """(x, y) of the first object of `kind` in a MiniGrid grid."""
    i = next(i for i, o in enumerate(grid.grid) if o is not None and o.type == kind)
    return i % grid.width, i // grid.width


def policy_by_row(run, episodes: int) -> dict:
    """{door row: {episodes, solved}} over `episodes` fresh episodes with sampled actions."""
    u = run.env.gym_env.unwrapped
    rows: dict = {}
    for i in range(episodes):
        ep = run.episode(50_000_000 + i)
        rows.setdefault(where(u.grid, "door")[1], []).append(ep["return"] > 0)
    return {str(r): {"episodes": len(v), "solved": sum(v)} for r, v in sorted(rows.items())}


def real_return(env_id: str, seed: int, actions: list[int]) -> float:
    """The real env's return for `actions` from a reset with `seed` (until the episode ends)."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    total = 0.0
    for a in actions:
        _, r, terminated, truncated, _ = env.step(a)
        total += float(r)
        if terminated or truncated:
            break
    env.close()
    return total


@torch.no_grad()
def imagined_wins_by_row(run, episodes: int, group: int) -> dict:
    """{door row: {starts, imagined_wins, real_wins}}: imagined wins after `agent.context_len` real
    steps of each episode, and how many of them the real env gives for the same actions."""
    u = run.env.gym_env.unwrapped
    k, horizon = run.cfg.agent.context_len, run.cfg.agent.horizon
    rows: dict = {}
    for i in range(episodes):
        seed = 50_000_000 + i
        ep = run.episode(seed, max_steps=k)
        if len(ep["actions"]) < k or ep["return"] > 0:        # over before the context: nothing to imagine
            continue
        context = [int(a) for a in ep["actions"]]
        state = run.world.observe(episode_batch(ep, k, run.world), sample=False)
        traj = run.world.imagine(state, run.agent.actor, horizon, group_size=group)     # [G, H]
        gained = (traj["reward"] * traj["weight"]).cumsum(1)                           # [G, H]
        wins = (gained[:, -1] > 0.5).nonzero().flatten().tolist()
        # each win's actions up to the step where its predicted reward passed 0.5
        ends = [int((gained[g] > 0.5).nonzero()[0]) + 1 for g in wins]
        real = sum(real_return(run.cfg.env.id, seed, context + traj["action"][g, :n].tolist()) > 0
                   for g, n in zip(wins, ends))
        r = rows.setdefault(str(where(u.grid, "door")[1]), {"starts": 0, "imagined_wins": 0, "real_wins": 0})
        r["starts"] += 1
        r["imagined_wins"] += len(wins)
        r["real_wins"] += real
    for r in rows.values():
        r["branches"] = r["starts"] * group
    return dict(sorted(rows.items()))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", help="run folders or checkpoints of MiniGrid-DoorKey-5x5 runs")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--imagine", type=int, default=0, metavar="G",
                   help="also imagine G branches per episode and replay the imagined wins in the real env")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    results = {}
    for path in a.runs:
        run = load(path, seed=0)
        if not run.cfg.env.id.startswith("MiniGrid-DoorKey-5x5"):
            sys.exit(f"{path} is a {run.cfg.env.id} run; this probe reads MiniGrid-DoorKey-5x5 layouts")
        torch.manual_seed(0)                    # the sampled actions and latents: the same draws on a rerun
        results[path] = policy_by_row(run, a.episodes)
        print(path, "  ".join(f"door row {row}: solved {r['solved']}/{r['episodes']}"
                              for row, r in results[path].items()), flush=True)
        if a.imagine:
            imagined = imagined_wins_by_row(run, a.episodes, a.imagine)
            for row, r in imagined.items():
                results[path][row]["imagined"] = r
            print("   imagined wins real:", "  ".join(f"door row {row}: {r['real_wins']}/{r['imagined_wins']} "
                                                      f"of {r['branches']} branches" for row, r in imagined.items()),
                  flush=True)
        if a.out:
            write_json(results, a.out)


if __name__ == "__main__":
    main()
