"""Multimodal benchmark (not a test): is the text / audio key used, or only there?

    python bench/multimodal.py --seeds 0 1 2 3 4          # both envs, with and without the key
    python bench/multimodal.py --quick                    # one short run per case, checks the plumbing

For each example env, actor-critic at the default config trains twice per seed under the learning
benchmark's protocol (evaluate every 1,000 env steps on 20 fresh episodes with sampled actions,
stop at 0.9 or at the budget):
  - with its full observation, and
  - with the one key that carries the task removed (`env.drop_keys`): the mission text of
    QuatrixWorld/SayColor-v0 (4 colours: chance 0.25), the audio of QuatrixWorld/ListenCorridor-v0
    (goal left or right: chance 0.5).
An agent that reads the key solves with it and stays at chance without it. Results are merged per
run into bench/results/multimodal.json: {env: {"with": {seed: ...}, "without": {seed: ...}}}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from learning import run_one                                 # noqa: E402

from quatrix_world.files import write_json                   # noqa: E402

CASES = {"QuatrixWorld/SayColor-v0": {"key": "mission", "chance": 0.25},
         "QuatrixWorld/ListenCorridor-v0": {"key": "audio", "chance": 0.5}}
THRESHOLD = 0.9
RESULTS = os.path.join(os.path.dirname(__file__), "results", "multimodal.json")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--envs", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--budget", type=int, default=10_000, help="env steps per run")
    p.add_argument("--runs", default="runs/bench_multimodal")
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--quick", action="store_true", help="seed 0, 300 steps, debug sizes")
    a = p.parse_args()
    extra, config, eval_every = [], "default", 1000
    if a.quick:
        a.seeds, a.budget, config, eval_every = [0], 300, "debug", 100
    results = json.load(open(a.out)) if os.path.exists(a.out) else {}
    for seed in a.seeds:
        for env_id in a.envs:
            case = CASES[env_id]
            for variant in ("with", "without"):
                sets = [f"env.id={env_id}", f"trainer.total_steps={a.budget}", "run.update_threads=1", *extra]
                if variant == "without":
                    sets.append(f"env.drop_keys=[{case['key']}]")
                name = f"{env_id.split('/')[-1]}-{variant}-{seed}"
                r = run_one(config, "actor_critic", seed, sets, a.runs, eval_every=eval_every,
                            threshold=THRESHOLD, name=name)
                r.update(key=case["key"], chance=case["chance"], budget=a.budget)
                results.setdefault(env_id, {}).setdefault(variant, {})[str(seed)] = r
                write_json(results, a.out)
                print(f"{env_id} {variant} {case['key']} seed {seed}: steps to {THRESHOLD} = "
                      f"{r['steps_to_threshold']}, final sampled {r['final_return_sampled']:.3f}, "
                      f"{r['wall_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
