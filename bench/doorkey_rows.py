"""DoorKey-5x5 by door row: which layouts a trained checkpoint's policy solves (benchmark, not a test).

    python bench/doorkey_rows.py RUN_OR_CHECKPOINT [...] --episodes 40 --out bench/results/doorkey_rows.json

MiniGrid-DoorKey-5x5 puts the door at row 1 or row 2 of the wall column. Each checkpoint plays fresh
episodes with sampled actions (seeds 50,000,000 + i, the same layouts for every checkpoint) and this
reports how many it solved per door row. A policy that learned the way through one door row only
scores about half of the threshold's 0.9.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.api import load                                # noqa: E402
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("runs", nargs="+", help="run folders or checkpoints of MiniGrid-DoorKey-5x5 runs")
    p.add_argument("--episodes", type=int, default=40)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    results = {}
    for path in a.runs:
        run = load(path, seed=0)
        if not run.cfg.env.id.startswith("MiniGrid-DoorKey-5x5"):
            sys.exit(f"{path} is a {run.cfg.env.id} run; this probe reads MiniGrid-DoorKey-5x5 layouts")
        results[path] = policy_by_row(run, a.episodes)
        print(path, "  ".join(f"door row {row}: solved {r['solved']}/{r['episodes']}"
                              for row, r in results[path].items()), flush=True)
        if a.out:
            write_json(results, a.out)


if __name__ == "__main__":
    main()
