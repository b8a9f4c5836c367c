"""Learning benchmark (not a test): does each agent reach the solve threshold, and how fast?

    python bench/learning.py --env minigrid_empty --agent actor_critic --seeds 0 1 2
    python bench/learning.py --quick            # one tiny run, checks the plumbing

Runs the real trainer in-process per (config, agent, seed) with the shipped config and the same
protocol for all (evaluate every 1000 env steps on 20 fresh episodes with the policy as trained,
i.e. sampled actions; the deterministic score is logged too; stop once the threshold is reached), reads its evaluation history, and
merges per-seed results into bench/results/learning.json:
    {config: {agent: {seed: {steps_to_threshold, seconds_to_threshold, final_return, history}}}}
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.rollout import write_json     # noqa: E402

from agents.trainer import Trainer                          # noqa: E402
from quatrix_world.config import load_config                # noqa: E402

THRESHOLDS = {"minigrid_empty": 0.9, "minigrid_doorkey": 0.9, "cartpole": 475.0, "pendulum": -200.0, "debug": 0.9}
RESULTS = os.path.join(os.path.dirname(__file__), "results", "learning.json")


def first_crossing(history: list[dict], threshold: float):
    for row in history:
        if row["eval/return_sampled"] >= threshold:
            return row["step"], row["seconds"]
    return None, None


def run_one(config: str, agent: str, seed: int, extra: list[str], run_root: str,
            eval_every: int = 1000, episodes: int = 20, threshold: float | None = None,
            name: str | None = None) -> dict:
    """One training run under the benchmark protocol (shared with bench/vs_ppo.py): evaluate every
    `eval_every` env steps on `episodes` fresh episodes, stop once the sampled score reaches the
    threshold (THRESHOLDS[config] unless given). `extra` are further --set overrides (e.g.
    trainer.total_steps=...); the run goes to `run_root/<name>` (default `<config>-<agent>-<seed>`)."""
    threshold = THRESHOLDS[config] if threshold is None else threshold
    protocol = [f"trainer.target_return={threshold}", f"trainer.eval_every={eval_every}",
                f"trainer.eval_episodes={episodes}"]
    cfg = load_config(["default.yaml", f"{config}.yaml"], [f"agent.kind={agent}", f"seed={seed}",
                                                           "trainer.progress=false", *protocol, *extra])
    run_dir = os.path.join(run_root, name or f"{config}-{agent}-{seed}")
    os.makedirs(run_dir, exist_ok=True)
    t0 = time.time()
    trainer = Trainer(cfg, run_dir, quiet=True, force=True)       # a rerun replaces the seed's run
    summary = trainer.train()
    steps, secs = first_crossing(trainer.eval_history, threshold)
    last = trainer.eval_history[-1] if trainer.eval_history else {}
    return {"steps_to_threshold": steps, "seconds_to_threshold": secs, "threshold": threshold,
            "final_return": last.get("eval/return"), "final_return_sampled": last.get("eval/return_sampled"),
            "total_steps": cfg.trainer.total_steps, "steps_run": summary["step"],
            "interrupted": summary["interrupted"], "wall_seconds": round(time.time() - t0, 1),
            "history": trainer.eval_history}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--env", default="minigrid_empty", choices=sorted(THRESHOLDS))
    p.add_argument("--agent", default="actor_critic", choices=["actor_critic", "grpo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--runs", default="runs/bench")
    p.add_argument("--quick", action="store_true", help="debug config, one seed, a few hundred steps")
    p.add_argument("--out", default=RESULTS)
    a = p.parse_args()
    if a.quick:
        a.env, a.seeds = "debug", [0]
    results = json.load(open(a.out)) if os.path.exists(a.out) else {}
    for seed in a.seeds:
        r = run_one(a.env, a.agent, seed, a.set, a.runs)
        results.setdefault(a.env, {}).setdefault(a.agent, {})[str(seed)] = r
        print(f"{a.env} {a.agent} seed {seed}: steps to {r['threshold']} = {r['steps_to_threshold']} "
              f"({r['seconds_to_threshold']} s), final {r['final_return']}/{r['final_return_sampled']}",
              flush=True)
        write_json(results, a.out)
        if r["interrupted"]:            # Ctrl-C / SIGTERM: this seed stopped at steps_run; no further seeds
            print(f"interrupted at {r['steps_run']} env steps; the remaining seeds did not run", flush=True)
            break


if __name__ == "__main__":
    main()
