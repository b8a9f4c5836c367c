"""Sample efficiency side by side: this toolkit (actor_critic, grpo) vs stable-baselines3 PPO.

    python bench/vs_ppo.py --quick                     # CartPole, 1 seed, tiny budget: checks the plumbing
    python bench/vs_ppo.py --import-learning bench/results/learning.json --methods   # histories -> CSVs
    python bench/vs_ppo.py --envs cartpole --methods ppo --seeds 0 1 2 3 4 --reuse
    python bench/vs_ppo.py --methods                   # no runs: recompute the JSON and PNGs from the CSVs

One protocol for every method: every `--eval-every` env steps (1000), `--episodes` (20) fresh
episodes with the sampled policy (deterministic=False); the score is their mean return (an
untrained network's argmax can be a lucky linear controller on CartPole, so a deterministic score
is never used for the threshold). Every run stops at the first evaluation whose score reaches the
threshold, otherwise at `--budget` env steps (30000, the shipped configs' total_steps). Our agents
run through bench/learning.py's `run_one` (the shipped config, no per-seed tuning); PPO uses SB3's
default hyperparameters with 8 envs (CnnPolicy on MiniGrid pixels, MlpPolicy on vectors), one
torch thread, and stops from its callback.

Per-seed CSVs are the source of truth: bench/results/runs/<method>/<ENV_ID>/<seed>.csv
(step,seconds,score), each written atomically when its run finishes (`--reuse` skips runs whose CSV
exists). bench/results/vs_ppo.json and vs_ppo_<env>.png are recomputed from ALL CSVs present for
the requested --seeds (all envs and methods), so runs can be spread over several invocations.
`--import-learning` converts bench/learning.py result files (same protocol) into CSVs.

"seconds" is wall-clock since the run started, including earlier evaluations, at the moment the
evaluation began (our trainer also plays a deterministic eval pass; PPO does not).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from quatrix_world.files import atomic_path, write_json  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ENVS = {  # name (= config name): (gym id, threshold)
    "minigrid_empty": ("MiniGrid-Empty-6x6-v0", 0.9),
    "minigrid_doorkey": ("MiniGrid-DoorKey-5x5-v0", 0.9),
    "cartpole": ("CartPole-v1", 475.0),
}
METHODS = ["ppo", "actor_critic", "grpo"]
# two-sided 95% Student-t critical values by degrees of freedom (n - 1)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


# ----------------------------------------------------------------------------- PPO

def ppo_env(env_id: str):
    import gymnasium as gym
    if env_id.startswith("MiniGrid-"):
        import minigrid  # noqa: F401
        from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
        return ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(env_id)))   # 56x56x3, as our agents see it
    return gym.make(env_id)


def run_ppo(env_id: str, seed: int, budget: int, eval_every: int, episodes: int, threshold: float,
            threads: int = 1, make=None, policy: str | None = None, policy_kwargs: dict | None = None,
            evaluate=None) -> list[tuple]:
    """SB3 PPO, evaluated every `eval_every` env steps; stops at the threshold or the budget. `make`
    (env_id -> gymnasium env; default `ppo_env`) and `policy` / `policy_kwargs` are for other envs;
    `evaluate(model, eval_env, episodes) -> (score, *more)` replaces the mean sampled return, and
    each history row is (step, seconds, score, *more)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    torch.set_num_threads(threads)
    make = make or ppo_env
    policy = policy or ("CnnPolicy" if env_id.startswith("MiniGrid-") else "MlpPolicy")
    venv = make_vec_env(lambda: make(env_id), n_envs=8, seed=seed)
    model = PPO(policy, venv, seed=seed, verbose=0, device="cpu", policy_kwargs=policy_kwargs)
    eval_env = make_vec_env(lambda: make(env_id), n_envs=1, seed=seed + 10_000)   # fresh episodes, seeded
    history, t0 = [], time.time()

    class Eval(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next = eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps < self.next:
                return True
            self.next += eval_every
            started = round(time.time() - t0, 2)
            if evaluate is None:
                score, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=False)
                more = ()
            else:
                score, *more = evaluate(model, eval_env, episodes)
            history.append((self.num_timesteps, started, float(score), *more))
            # stop at the first eval that reaches the threshold, or at the budget (SB3 would otherwise
            # finish its 8 x 2048-step rollout past the budget)
            return score < threshold and self.num_timesteps < budget

    model.learn(total_timesteps=budget, callback=Eval())
    return history


# ----------------------------------------------------------------------------- ours

def run_ours(method: str, name: str, seed: int, budget: int, eval_every: int, episodes: int, extra: list,
             run_root: str) -> list[tuple]:
    from learning import run_one
    r = run_one(name, method, seed, [f"trainer.total_steps={budget}", *extra], run_root,
                eval_every=eval_every, episodes=episodes)
    return history_rows(r["history"])


def history_rows(history: list[dict]) -> list[tuple]:
    return [(int(r["step"]), float(r["seconds"]), float(r["eval/return_sampled"])) for r in history]


# ----------------------------------------------------------------------------- per-seed CSVs

def csv_path(root: str, method: str, env_id: str, seed: int) -> str:
    return os.path.join(root, method, env_id, f"{seed}.csv")


def write_csv(path: str, rows: list[tuple]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "seconds", "score"])
        w.writerows(rows)


def read_csv(path: str) -> list[tuple]:
    with open(path) as f:
        return [(int(r["step"]), float(r["seconds"]), float(r["score"])) for r in csv.DictReader(f)]


def import_learning(paths: list[str], root: str) -> None:
    """learning.json-format files -> per-seed CSVs, rows up to and including the first crossing."""
    for path in paths:
        data = json.load(open(path))
        for name, per_agent in data.items():
            if name not in ENVS:
                continue
            env_id, threshold = ENVS[name]
            for agent, per_seed in per_agent.items():
                for seed, r in per_seed.items():
                    rows = []
                    for row in history_rows(r["history"]):
                        rows.append(row)
                        if row[2] >= threshold:
                            break
                    total = r.get("total_steps")
                    if not rows or (rows[-1][2] < threshold and total is not None and rows[-1][0] < total):
                        print(f"skipped {path}: {agent} {env_id} seed {seed} is incomplete (no crossing, last eval "
                              f"at {rows[-1][0] if rows else 0} of {total} steps: interrupted?)", flush=True)
                        continue
                    write_csv(csv_path(root, agent, env_id, int(seed)), rows)
                    print(f"imported {path}: {agent} {env_id} seed {seed} ({len(rows)} evals, last "
                          f"{rows[-1][0]} steps score {rows[-1][2]:.3f})", flush=True)


# ----------------------------------------------------------------------------- summary

def _median_iqr(values: list[float]):
    """Median and IQR with unsolved seeds counted as 'beyond the budget' (censored): a statistic that
    lands beyond the budget is None."""
    v = sorted(np.inf if x is None else float(x) for x in values)      # unsolved = +inf
    if not v:
        return None, [None, None]

    def quantile(q: float):
        # numpy's linear interpolation, written out: numpy computes v[i] + 0 * (inf - v[i]) = nan
        # when a quantile lands exactly on a solved seed next to an unsolved one
        pos = q * (len(v) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        x = v[lo] if lo == hi else v[lo] + (pos - lo) * (v[hi] - v[lo])
        return round(x, 2) if math.isfinite(x) else None
    return quantile(0.5), [quantile(0.25), quantile(0.75)]


def summarise(histories: dict, threshold: float, budget: int) -> dict:
    per_seed_steps, per_seed_secs, finals = {}, {}, []
    for seed, h in sorted(histories.items()):
        hit = next(((s, t) for s, t, v in h if v >= threshold), None)
        per_seed_steps[str(seed)] = hit[0] if hit else None
        per_seed_secs[str(seed)] = hit[1] if hit else None
        finals.append(h[-1][2] if h else float("nan"))
    finals = np.array(finals, dtype=float)
    n = len(finals)
    ci = T95[max(k for k in T95 if k <= n - 1)] * finals.std(ddof=1) / math.sqrt(n) if n > 1 else None
    med_steps, iqr_steps = _median_iqr(list(per_seed_steps.values()))
    med_secs, _ = _median_iqr(list(per_seed_secs.values()))
    solved = [s for s in per_seed_steps.values() if s is not None]
    return {"median_steps_to_threshold": med_steps, "iqr_steps_to_threshold": iqr_steps,
            "median_seconds_to_threshold": med_secs, "solved_seeds": len(solved),
            "final_return_mean": float(finals.mean()) if n else None,
            "final_return_ci95": None if ci is None else float(ci),
            "budget": budget, "threshold": threshold, "seeds": [int(s) for s in sorted(histories)],
            "steps_to_threshold": per_seed_steps, "seconds_to_threshold": per_seed_secs,
            "final_returns": {str(s): float(h[-1][2]) for s, h in sorted(histories.items()) if h},
            "median_steps_solved_only": float(np.median(solved)) if solved else None}


def plot(env_id: str, per_method: dict, threshold: float, budget: int, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, hs in per_method.items():
        if not hs:
            continue
        color = f"C{METHODS.index(method) if method in METHODS else len(METHODS)}"
        for h in hs.values():
            ax.plot([s for s, _, _ in h], [v for _, _, v in h], color=color, alpha=0.3, lw=1, marker=".", ms=3)
        # median over seeds; a run that stopped early is held at its last score
        steps = sorted({s for h in hs.values() for s, _, _ in h})
        def at(h, s):
            past = [v for s2, _, v in h if s2 <= s]
            return past[-1] if past else np.nan
        med = [np.nanmedian([at(h, s) for h in hs.values()]) for s in steps]
        ax.plot(steps, med, color=color, lw=2.2, label=f"{method} (median of {len(hs)} seeds)")
    ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlim(0, budget)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return (20 ep., sampled)")
    ax.set_title(f"{env_id} (thin: seeds; runs stop at the threshold)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_summary(a, csv_root: str, out_json: str, suffix: str) -> dict:
    results = {"protocol": {"eval_every": a.eval_every, "episodes": a.episodes, "policy": "sampled",
                            "score": "mean return of the eval episodes",
                            "stop": "first eval with score >= threshold, else at budget",
                            "final_return": "score at the last eval (the crossing eval if solved, else at the budget)",
                            "median_steps": "over all seeds, unsolved counted as beyond the budget (null if the "
                                            "median is beyond it)",
                            "ci95": "Student-t half-width over seeds",
                            "ppo": "stable-baselines3 defaults, 8 envs, CnnPolicy on pixels / MlpPolicy on vectors",
                            "csv": "runs/<method>/<env>/<seed>.csv (step,seconds,score)"},
               "envs": {}}
    for name in ENVS:                   # every env with CSVs, whichever --envs this invocation ran
        env_id, threshold = ENVS[name]
        per_method = {}
        for method in a.methods_summary:
            hs = {seed: read_csv(csv_path(csv_root, method, env_id, seed)) for seed in a.seeds
                  if os.path.exists(csv_path(csv_root, method, env_id, seed))}
            if hs:
                per_method[method] = hs
                results["envs"].setdefault(env_id, {})[method] = summarise(hs, threshold, a.budget)
        if per_method:
            plot(env_id, per_method, threshold, a.budget, os.path.join(a.results, f"vs_ppo_{name}{suffix}.png"))
    write_json(results, out_json)
    return results


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS,
                   help="methods to run (empty: run nothing, only import/summarise)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", type=int, default=30_000)
    p.add_argument("--eval-every", type=int, default=1_000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--set", action="append", default=[], help="override for our methods")
    p.add_argument("--reuse", action="store_true", help="do not rerun a (method, env, seed) whose CSV exists")
    p.add_argument("--import-learning", nargs="+", default=[], metavar="PATH",
                   help="bench/learning.py result files to convert into per-seed CSVs first")
    p.add_argument("--runs", default=os.path.join("runs", "vs_ppo"), help="trainer run dirs for our methods")
    p.add_argument("--quick", action="store_true", help="1 seed, CartPole, tiny budget (smoke test)")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    a = p.parse_args()
    a.methods_summary = METHODS
    suffix = ""
    if a.quick:
        a.envs, a.seeds, a.budget, a.eval_every, a.episodes = ["cartpole"], [0], 1200, 600, 2
        a.set = a.set + ["trainer.prefill=400", "trainer.batch_size=4", "trainer.seq_len=16", "agent.horizon=8", "agent.starts=16",
                         "trainer.video_every_eval=false"]
        a.runs = os.path.join(a.results, "train_quick")
        suffix = "_quick"
    csv_root = os.path.join(a.results, "runs" + suffix)
    out_json = os.path.join(a.results, f"vs_ppo{suffix}.json")
    if a.import_learning:
        import_learning(a.import_learning, csv_root)
    for name in a.envs:
        env_id, threshold = ENVS[name]
        for method in a.methods:
            for seed in a.seeds:
                path = csv_path(csv_root, method, env_id, seed)
                if a.reuse and os.path.exists(path):
                    print(f"{env_id} {method} seed {seed}: reusing {path}", flush=True)
                    continue
                t0 = time.time()
                if method == "ppo":
                    h = run_ppo(env_id, seed, a.budget, a.eval_every, a.episodes, threshold)
                else:
                    h = run_ours(method, name, seed, a.budget, a.eval_every, a.episodes, a.set, a.runs)
                write_csv(path, h)
                hit = next((s for s, _, v in h if v >= threshold), None)
                print(f"{env_id} {method} seed {seed}: wall {time.time() - t0:.1f} s, steps to {threshold:g} = {hit}, "
                      f"last {h[-1][0]} steps score {h[-1][2]:.3f} | " + ", ".join(f"{s}:{v:.2f}" for s, _, v in h),
                      flush=True)
            write_summary(a, csv_root, out_json, suffix)     # after every (env, method): nothing is lost
    results = write_summary(a, csv_root, out_json, suffix)
    for env_id, per in results["envs"].items():
        for method, r in per.items():
            ci = r["final_return_ci95"]
            print(f"{env_id:24s} {method:12s} median steps {r['median_steps_to_threshold']} IQR {r['iqr_steps_to_threshold']} "
                  f"median s {r['median_seconds_to_threshold']} solved {r['solved_seeds']}/{len(r['seeds'])} "
                  f"final {r['final_return_mean']:.3f} ± {'n/a' if ci is None else f'{ci:.3f}'}", flush=True)


if __name__ == "__main__":
    main()
