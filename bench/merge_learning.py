"""Merge per-run JSONs written by `bench/learning.py --out X.json` into bench/results/learning.json.

    python bench/merge_learning.py bench/results/learning.json runs/ac_empty.json runs/grpo_empty.json ...

Steps to threshold are recomputed from each run's evaluation history with the sampled-policy rule,
so files written under an earlier stopping rule are judged the same way. Later files win per seed.
"""
import json
import sys


def crossing(history, threshold):
    for row in history:
        if row["eval/return_sampled"] >= threshold:
            return row["step"], row["seconds"]
    return None, None


def main(out_path, *paths):
    out = {}
    for path in paths:
        for env, agents in json.load(open(path)).items():
            for agent, seeds in agents.items():
                for seed, r in seeds.items():
                    r["steps_to_threshold"], r["seconds_to_threshold"] = crossing(r["history"], r["threshold"])
                    out.setdefault(env, {}).setdefault(agent, {})[seed] = r
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1)
    for env, agents in out.items():
        for agent, seeds in agents.items():
            print(env, agent, {s: r["steps_to_threshold"] for s, r in sorted(seeds.items())})


if __name__ == "__main__":
    main(*sys.argv[1:])
