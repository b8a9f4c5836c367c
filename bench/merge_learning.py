"""Merge per-agent learning JSONs (from bench/learning.py --out ...) into bench/results/learning.json,
recomputing steps to threshold from each run's history with the sampled-policy rule."""
import json, os, glob
out = {}
def crossing(h, thr):
    for r in h:
        if r["eval/return_sampled"] >= thr: return r["step"], r["seconds"]
    return None, None
files = ["/tmp/lb/ac_empty.json", "/tmp/lb/grpo_empty.json", "/tmp/lb/ac_cartpole.json", "/tmp/lb/grpo_cartpole.json", "/tmp/lb/ac_empty_rerun.json"]
for f in files:
    if not os.path.exists(f): continue
    d = json.load(open(f))
    for env, agents in d.items():
        for agent, seeds in agents.items():
            for seed, r in seeds.items():
                r["steps_to_threshold"], r["seconds_to_threshold"] = crossing(r["history"], r["threshold"])
                if "rerun" in f: r["note"] = "rerun: the first run of this seed stopped on the old max(det, sampled) rule"
                out.setdefault(env, {}).setdefault(agent, {})[seed] = r
json.dump(out, open("/work/main/bench/results/learning.json", "w"), indent=1)
for env, agents in out.items():
    for agent, seeds in agents.items():
        print(env, agent, {s: (r["steps_to_threshold"], r["seconds_to_threshold"]) for s, r in sorted(seeds.items())})
