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
run into bench/results/multimodal.json: {env: {"with": {seed: ...}, "without": {seed: ...}}}; runs
already there are skipped (--rerun repeats them). Two processes (one per core) each take one env:
    python bench/multimodal.py --envs QuatrixWorld/SayColor-v0 --out bench/results/multimodal_saycolor.json
then merge the files with --merge.
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
    p.add_argument("--rerun", action="store_true", help="run again what --out holds already")
    p.add_argument("--merge", nargs="+", metavar="FILE", help="merge these results files into --out and stop")
    p.add_argument("--report", metavar="FILE.png", help="curves of --out's runs to this PNG, a markdown table "
                   "to stdout, and stop")
    a = p.parse_args()
    if a.report:
        report(json.load(open(a.out)), a.report)
        return
    if a.merge:
        results = json.load(open(a.out)) if os.path.exists(a.out) else {}
        for path in a.merge:
            for env_id, variants in json.load(open(path)).items():
                for variant, seeds in variants.items():
                    results.setdefault(env_id, {}).setdefault(variant, {}).update(seeds)
        write_json(results, a.out)
        return
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
                if str(seed) in results.get(env_id, {}).get(variant, {}) and not a.rerun:
                    continue                                 # measured already (a rerun: --rerun)
                r = run_one(config, "actor_critic", seed, sets, a.runs, eval_every=eval_every,
                            threshold=THRESHOLD, name=name)
                r.update(key=case["key"], chance=case["chance"], budget=a.budget)
                results.setdefault(env_id, {}).setdefault(variant, {})[str(seed)] = r
                write_json(results, a.out)
                print(f"{env_id} {variant} {case['key']} seed {seed}: steps to {THRESHOLD} = "
                      f"{r['steps_to_threshold']}, final sampled {r['final_return_sampled']:.3f}, "
                      f"{r['wall_seconds']:.0f} s", flush=True)


def report(results: dict, png: str) -> None:
    """Curves (sampled eval return against env steps, one line per seed; with the key solid,
    without it dashed, chance dotted) and a markdown table: solved seeds, censored median steps to
    0.9, final return with a 95% CI."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from vs_ppo import summarise
    from quatrix_world.files import atomic_path
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 3.6), squeeze=False)
    print("| env | observation | seeds | solved (0.9) | median env steps | final return (sampled) | "
          "mean of every evaluation |")
    print("|---|---|---|---|---|---|---|")
    for ax, (env_id, variants) in zip(axes.flat, sorted(results.items())):
        case = CASES[env_id]
        for variant, style in (("with", "-"), ("without", "--")):
            runs = variants.get(variant, {})
            if not runs:
                continue
            hist = {int(s): [(r["step"], r["seconds"], r["eval/return_sampled"]) for r in v["history"]]
                    for s, v in runs.items()}
            budget = max(v["budget"] for v in runs.values())
            sm = summarise(hist, THRESHOLD, budget)
            label = f"{'with' if variant == 'with' else 'without'} {case['key']}"
            for i, (seed, h) in enumerate(sorted(hist.items())):
                ax.plot([x[0] for x in h], [x[2] for x in h], ls=style, color="C0" if variant == "with" else "C3",
                        alpha=0.8, label=label if i == 0 else None)
            med = sm["median_steps_to_threshold"]
            ci = sm["final_return_ci95"]
            every = [x[2] for h in hist.values() for x in h]             # chance shows here, not in one draw
            print(f"| {env_id} | {label} | {len(hist)} | {sm['solved_seeds']}/{len(hist)} | "
                  f"{'> ' + format(budget, ',') if med is None else format(int(med), ',')} | "
                  f"{sm['final_return_mean']:.2f}{'' if ci is None else f' ± {ci:.2f}'} | "
                  f"{sum(every) / len(every):.2f} ({len(every)} evaluations) |")
        ax.axhline(case["chance"], color="grey", ls=":", label=f"chance ({case['chance']})")
        ax.axhline(THRESHOLD, color="grey", lw=0.6)
        ax.set_title(env_id, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return (sampled actions)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
