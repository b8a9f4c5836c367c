"""Suite envs at a fixed env-step budget, ours beside stable-baselines3 PPO (benchmark, not a test).

    python bench/suites.py --env MinAtar/Breakout-v1 --config minatar --seeds 0 1 2 --out bench/results/suites_minatar.json
    python bench/suites.py --env MinAtar/Asterix-v1 --config minatar --methods ppo --out bench/results/suites_minatar.json
    python bench/suites.py --report bench/results/suites_minatar.json --plot docs/suites_minatar.png

bench/vs_ppo.py's protocol with a budget instead of a threshold (a suite has no solve score): every
`--eval-every` env steps, `--episodes` fresh episodes with the sampled policy, score = their mean
return; each run goes to `--budget` env steps. Ours is the shipped `configs/<config>.yaml` with
`env.id` set; PPO is SB3's defaults with 8 envs on the same preprocessed env (`envs.make.build_gym_env`,
so the same frame skip, sticky actions and 64x64 frames): CnnPolicy (NatureCNN) on 64x64 RGB,
MinAtar's own small network (conv 16 3x3, dense 128, as in its paper's baselines) on its 10x10
channels, an MLP on vectors. One torch thread each unless `--threads`. On Crafter each evaluation
also gives the Crafter score of its episodes (envs/crafter.py; PPO's from each episode's last
`achievements`), the fourth value of a history row.

The result file holds one entry per (env, method, seed), written as each run ends, so several
invocations (one per core) can fill it: `--out` is read first and merged (runs present are skipped
unless `--force`).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.append(HERE)                          # vs_ppo, after the repository (bench/envs.py is not envs/)

from envs.make import build_gym_env  # noqa: E402
from quatrix_world.files import write_json  # noqa: E402
from vs_ppo import T95, run_ppo as run_to  # noqa: E402


# ----------------------------------------------------------------------------- PPO

def ppo_env(env_id: str, **options):
    """The env our trainer sees (family preprocessing and `options` included), in the dtype SB3's policies take."""
    import gymnasium as gym
    env, _, _ = build_gym_env(env_id, render_mode=None, **options)
    shape = env.observation_space.shape
    if len(shape) == 3 and min(shape[:2]) < 36:        # MinAtar: C boolean channels, too small for NatureCNN
        space = gym.spaces.Box(0.0, 1.0, (shape[2], *shape[:2]), np.float32)
        env = gym.wrappers.TransformObservation(env, lambda o: (np.moveaxis(o, -1, 0) > 0).astype(np.float32), space)
    return env


def small_cnn():
    """MinAtar's baseline network body: one 3x3 conv with 16 channels, then a 128-unit layer."""
    import torch.nn as nn
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class SmallCNN(BaseFeaturesExtractor):
        def __init__(self, space):
            super().__init__(space, features_dim=128)
            c, h, w = space.shape
            self.net = nn.Sequential(nn.Conv2d(c, 16, 3), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(16 * (h - 2) * (w - 2), 128), nn.ReLU())

        def forward(self, x):
            return self.net(x)
    return SmallCNN


def crafter_evaluate(model, eval_env, episodes: int) -> tuple[float, float]:
    """Mean sampled return and the Crafter score of the same episodes (envs/crafter.py's definition:
    success rates over the evaluation's episodes), read from the last step's `achievements`."""
    from stable_baselines3.common.evaluation import evaluate_policy
    from envs.crafter import crafter_score
    unlocked = []

    def on_step(local, _):
        if local["done"]:
            unlocked.append({a: 100.0 * (n > 0) for a, n in local["info"]["achievements"].items()})
    score, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=False, callback=on_step)
    return float(score), crafter_score({a: np.mean([u[a] for u in unlocked]) for a in unlocked[0]})


def run_ppo(env_id: str, seed: int, budget: int, eval_every: int, episodes: int, threads: int,
            options: dict | None = None) -> list:
    """vs_ppo.py's PPO on this env, to the budget (no threshold)."""
    options = options or {}
    probe = ppo_env(env_id, **options)
    space = probe.observation_space
    probe.close()
    kw = {"evaluate": crafter_evaluate} if env_id in ("crafter", "Crafter-v1") else {}
    if len(space.shape) == 3 and space.dtype == np.float32:             # MinAtar's channels
        kw.update(policy="MlpPolicy", policy_kwargs={"features_extractor_class": small_cnn()})
    else:
        kw.update(policy="CnnPolicy" if len(space.shape) == 3 else "MlpPolicy")
    return run_to(env_id, seed, budget, eval_every, episodes, math.inf, threads,
                  make=functools.partial(ppo_env, **options), **kw)


# ----------------------------------------------------------------------------- ours

def run_ours(env_id: str, config: str, agent: str, seed: int, budget: int, eval_every: int, episodes: int,
             threads: int, extra: list, run_root: str | None, options: dict | None = None) -> list:
    import torch
    from agents.trainer import Trainer
    from quatrix_world.config import load_config
    torch.set_num_threads(threads)
    cfg = load_config(["default.yaml", f"{config}.yaml"],
                      [f"env.id={env_id}", f"agent.kind={agent}", f"seed={seed}", f"trainer.total_steps={budget}",
                       f"trainer.eval_every={eval_every}", f"trainer.eval_episodes={episodes}",
                       "trainer.eval_deterministic=false", "trainer.video_every_eval=false",
                       "trainer.progress=false", f"run.update_threads={threads}",
                       *(f"env.options.{k}={v}" for k, v in (options or {}).items()), *extra])
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(run_root or tmp, f"{env_id.replace('/', '_')}-{agent}-{seed}")
        os.makedirs(run_dir, exist_ok=True)
        trainer = Trainer(cfg, run_dir, quiet=True, force=True)
        trainer.train()
        # step, seconds at the start of the evaluation, sampled score (and the Crafter score where there is one)
        return [(int(r["step"]), float(r["seconds"]), float(r["eval/return_sampled"]),
                 *([float(r["eval/crafter_score"])] if "eval/crafter_score" in r else []))
                for r in trainer.eval_history]


# ----------------------------------------------------------------------------- summary

def summarise(runs: dict) -> dict:
    """runs: seed -> history rows. Final score = the mean of the last two evaluations (less eval noise)."""
    finals = np.array([np.mean([row[2] for row in h[-2:]]) for h in runs.values() if h], dtype=float)
    n = len(finals)
    ci = T95[max(k for k in T95 if k <= n - 1)] * finals.std(ddof=1) / math.sqrt(n) if n > 1 else None
    scores = [np.mean([row[3] for row in h[-2:]]) for h in runs.values() if h and len(h[-1]) > 3]   # Crafter
    return {"seeds": sorted(int(s) for s in runs), "final_mean": float(finals.mean()) if n else None,
            "final_ci95": ci, "finals": [round(float(f), 3) for f in finals],
            "crafter_score": float(np.mean(scores)) if scores else None,
            "steps": max((h[-1][0] for h in runs.values() if h), default=0),
            "seconds_per_run": [round(h[-1][1], 1) for h in runs.values() if h]}


def report(results: dict, plot_path: str | None) -> None:
    print("| env | method | seeds | env steps | final return (mean of the last 2 evals) ± 95% CI | per seed |")
    print("|---|---|---|---|---|---|")
    for env_id, methods in results["runs"].items():
        for method, runs in methods.items():
            s = summarise(runs)
            ci = f" ± {s['final_ci95']:.2f}" if s["final_ci95"] is not None else ""
            if s["crafter_score"] is not None:
                ci += f" (Crafter score {s['crafter_score']:.2f}%)"
            print(f"| {env_id} | {method} | {len(s['seeds'])} | {s['steps']:,} | {s['final_mean']:.2f}{ci} | "
                  f"{' / '.join(f'{f:g}' for f in s['finals'])} |")
    if plot_path:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        envs = list(results["runs"])
        methods = sorted({m for runs in results["runs"].values() for m in runs})     # one colour per method
        fig, axes = plt.subplots(1, len(envs), figsize=(5 * len(envs), 3.6), squeeze=False)
        for ax, env_id in zip(axes[0], envs):
            for method, runs in sorted(results["runs"][env_id].items()):
                i = methods.index(method)
                for j, h in enumerate(runs.values()):
                    ax.plot([r[0] for r in h], [r[2] for r in h], color=f"C{i}", alpha=0.8, lw=1.2, marker=".",
                            label=f"{method} ({len(runs)} seed{'s' * (len(runs) > 1)})" if j == 0 else None)
            ax.set_title(env_id, fontsize=9)
            ax.set_xlabel("env steps")
            ax.set_ylabel("eval return (sampled)")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_path, dpi=90)
        plt.close(fig)
        print(f"wrote {plot_path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", help="gymnasium id, e.g. MinAtar/Breakout-v1")
    p.add_argument("--config", default="minatar", help="shipped config for our agent (configs/<name>.yaml)")
    p.add_argument("--agent", default="actor_critic", choices=["actor_critic", "grpo"])
    p.add_argument("--methods", nargs="+", default=["ours", "ppo"], choices=["ours", "ppo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=int, default=100_000)
    p.add_argument("--eval-every", type=int, default=5_000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an env option for both methods, e.g. shadows=false on DMC (YAML value)")
    p.add_argument("--set", action="append", default=[], help="extra --set overrides for our trainer")
    p.add_argument("--runs", help="keep our run folders here (default: a temporary folder)")
    p.add_argument("--force", action="store_true", help="rerun (env, method, seed) entries already in --out")
    p.add_argument("--report", metavar="JSON", help="no runs: print the table (and --plot) from this file")
    p.add_argument("--plot", help="with --report: write the curves here")
    p.add_argument("--out", default=os.path.join(HERE, "results", "suites.json"))
    a = p.parse_args()
    if a.report:
        report(json.load(open(a.report)), a.plot)
        return
    if not a.env:
        p.error("--env is required unless --report")
    import yaml
    options = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in a.env_option)}
    for seed in a.seeds:
        for method in a.methods:
            results = json.load(open(a.out)) if os.path.exists(a.out) else {"runs": {}}
            name = a.agent if method == "ours" else "ppo"
            if str(seed) in results["runs"].get(a.env, {}).get(name, {}) and not a.force:
                continue
            t0 = time.time()
            if method == "ours":
                h = run_ours(a.env, a.config, a.agent, seed, a.budget, a.eval_every, a.episodes, a.threads,
                             a.set, a.runs, options)
            else:
                h = run_ppo(a.env, seed, a.budget, a.eval_every, a.episodes, a.threads, options)
            results = json.load(open(a.out)) if os.path.exists(a.out) else {"runs": {}}   # another process may have written
            results["runs"].setdefault(a.env, {}).setdefault(name, {})[str(seed)] = h
            results["protocol"] = {"eval_every": a.eval_every, "episodes": a.episodes, "budget": a.budget,
                                   "policy": "sampled", "threads": a.threads, "config": a.config,
                                   **({"env_options": options} if options else {})}
            write_json(results, a.out)
            print(f"{a.env} {name} seed {seed}: final {h[-1][2]:.2f} at {h[-1][0]} steps, "
                  f"{time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
