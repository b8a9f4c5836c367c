"""Seconds to solve, side by side: our agent and stable-baselines3 PPO, one after the other.

    python bench/wallclock.py --envs minigrid_empty cartpole --seeds 0 1 2 3 4
    python bench/wallclock.py --envs minigrid_doorkey --seeds 0 --agent grpo
    python bench/wallclock.py --quick                       # CartPole, tiny budgets: checks the plumbing
    python bench/wallclock.py --report                      # no runs: reprint the table from the JSON
    python bench/wallclock.py --merge a.json b.json         # no runs: one results file from several

Protocol (shared with bench/vs_ppo.py): every 1,000 env steps, 20 fresh episodes with sampled
actions; a run stops at the first evaluation whose mean return reaches the threshold, or at its
budget (ours: the shipped config's 30,000 steps; PPO: 300,000, enough for it to solve). Both run
in this process, one after the other (ours, then PPO, per seed), so they see the same machine;
run nothing else beside it. Both use the same torch thread count (`--threads`, default: every
core). Our trainer evaluates sampled actions only here (`trainer.eval_deterministic=false`),
the same work PPO's evaluation does.

Reports env steps and seconds to the threshold for both, and for ours the seconds per env step
split into acting (the policy through the world model), env stepping, world-model updates,
agent updates and evaluation. Each finished run is merged into bench/results/wallclock.json at
once (`--reuse` skips runs already there).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from learning import THRESHOLDS, first_crossing, run_one      # noqa: E402
from vs_ppo import ENVS, _median_iqr, run_ppo                 # noqa: E402

from agents.rollout import write_json                         # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "wallclock.json")
PARTS = ("act", "env", "world", "agent", "eval")


def run_ours_timed(env: str, agent: str, seed: int, budget: int, threads: int, extra: list[str]) -> dict:
    sets = [f"trainer.total_steps={budget}", "trainer.eval_deterministic=false", "trainer.video_every_eval=false",
            f"run.update_threads={threads}", *extra]
    with tempfile.TemporaryDirectory() as root:
        r = run_one(env, agent, seed, sets, root)
    last = r["history"][-1]
    steps = last["step"]
    return {"steps_to_threshold": r["steps_to_threshold"], "seconds_to_threshold": r["seconds_to_threshold"],
            "final_return": r["final_return_sampled"], "steps": steps, "wall_seconds": r["wall_seconds"],
            "seconds_per_step": {k: round(last[f"time/{k}"] / steps, 5) for k in PARTS},
            "history": [(h["step"], h["seconds"], h["eval/return_sampled"]) for h in r["history"]]}


def run_ppo_timed(env_id: str, seed: int, budget: int, threads: int, threshold: float) -> dict:
    t0 = time.time()
    hist = run_ppo(env_id, seed, budget, 1000, 20, threshold, threads=threads)
    solved = [(s, sec) for s, sec, score in hist if score >= threshold]
    return {"steps_to_threshold": solved[0][0] if solved else None,
            "seconds_to_threshold": solved[0][1] if solved else None,
            "final_return": hist[-1][2], "steps": hist[-1][0], "wall_seconds": round(time.time() - t0, 1),
            "history": hist}


def summary(results: dict) -> dict:
    out = {}
    for key, runs in results.items():
        if key.startswith("_"):
            continue
        env, method = key.split("/")
        vals = list(runs.values())
        solved = [v for v in vals if v["seconds_to_threshold"] is not None]
        # an unsolved seed counts as beyond the budget (vs_ppo.py's censored median): None if the median is
        # beyond it
        row = {"seeds": len(vals), "solved": len(solved),
               "median_steps": _median_iqr([v["steps_to_threshold"] for v in vals])[0],
               "median_seconds": _median_iqr([v["seconds_to_threshold"] for v in vals])[0]}
        if vals and "seconds_per_step" in vals[0]:
            row["seconds_per_step"] = {k: round(statistics.median(v["seconds_per_step"][k] for v in vals), 5)
                                       for k in PARTS}
        out.setdefault(env, {})[method] = row
    return out


def print_table(results: dict) -> None:
    s = summary(results)
    print("| env | method | solved | median env steps | median seconds | ours: s/step act, env, world, agent, eval |")
    print("|---|---|---|---|---|---|")
    for env, methods in s.items():
        for method, r in methods.items():
            parts = ", ".join(f"{r['seconds_per_step'][k]:.4f}" for k in PARTS) if "seconds_per_step" in r else ""
            print(f"| {env} | {method} | {r['solved']}/{r['seeds']} | {r['median_steps']} | "
                  f"{r['median_seconds']} | {parts} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["minigrid_empty", "cartpole"], choices=sorted(ENVS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--agent", default="actor_critic", choices=["actor_critic", "grpo"])
    p.add_argument("--methods", nargs="+", default=["ours", "ppo"], choices=["ours", "ppo"])
    p.add_argument("--budget", type=int, default=30_000, help="our env-step budget")
    p.add_argument("--ppo-budget", type=int, default=300_000)
    p.add_argument("--threads", type=int, default=0, help="torch threads for both (0 = every core)")
    p.add_argument("--set", action="append", default=[], help="extra --set overrides for our trainer")
    p.add_argument("--reuse", action="store_true", help="skip runs already in the results file")
    p.add_argument("--quick", action="store_true", help="CartPole, seed 0, 2k/3k-step budgets")
    p.add_argument("--report", action="store_true", help="no runs: print the table from --out")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="no runs: merge these results files (e.g. ours and PPO run on separate cores) into --out")
    p.add_argument("--out", default=RESULTS)
    a = p.parse_args()
    if a.quick:
        a.envs, a.seeds, a.budget, a.ppo_budget = ["cartpole"], [0], 2000, 3000
    results = json.load(open(a.out)) if os.path.exists(a.out) else {}
    if a.merge:
        results = {}
        for path in a.merge:
            part = json.load(open(path))
            for key, runs in part.items():
                if key == "_machine":
                    results.setdefault("_machine", {}).update(runs)
                elif not key.startswith("_"):
                    results.setdefault(key, {}).update(runs)
        results["_summary"] = summary(results)
        write_json(results, a.out)
    elif not a.report:
        import torch
        threads = a.threads or torch.get_num_threads()
        results["_machine"] = {"cpus": os.cpu_count(), "threads": threads, "torch": torch.__version__}
        for env in a.envs:
            env_id, threshold = ENVS[env]
            for seed in a.seeds:
                for method in a.methods:
                    key = f"{env}/{a.agent if method == 'ours' else 'ppo'}"
                    if a.reuse and str(seed) in results.get(key, {}):
                        continue
                    if method == "ours":
                        r = run_ours_timed(env, a.agent, seed, a.budget, threads, a.set)
                    else:
                        r = run_ppo_timed(env_id, seed, a.ppo_budget, threads, threshold)
                    results.setdefault(key, {})[str(seed)] = r
                    results["_summary"] = summary(results)
                    write_json(results, a.out)
                    print(f"{key} seed {seed}: {r['steps_to_threshold']} steps, {r['seconds_to_threshold']} s "
                          f"to {threshold} (final {r['final_return']:.3f}, {r['wall_seconds']} s)", flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
