"""Sample efficiency side by side: this toolkit (actor_critic, grpo) vs stable-baselines3 PPO.

    python bench/vs_ppo.py --quick                     # 1 seed, tiny budget: checks the plumbing
    python bench/vs_ppo.py --envs cartpole --seeds 0 1 2 3 4 --budget 20000

Same env-step budget, same seeds, same evaluation protocol for every method: every `eval_every`
env steps, 20 fresh episodes with the sampled policy; the score
is the sampled policy's mean (an untrained network's argmax can be a lucky linear controller on
CartPole, so the deterministic score is not used for the threshold). PPO uses SB3's
default hyperparameters with 8 envs (CnnPolicy on pixels, MlpPolicy on vectors).

Writes per-seed CSVs bench/results/runs/<method>/<env>/<seed>.csv (step,seconds,score) and
bench/results/vs_ppo.json shaped {"envs": {ENV_ID: {METHOD: {...}}}}, plus a PNG per env.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

HERE = os.path.dirname(os.path.abspath(__file__))
ENVS = {  # name: (gym id, config, threshold)
    "minigrid_empty": ("MiniGrid-Empty-6x6-v0", "minigrid_empty.yaml", 0.9),
    "minigrid_doorkey": ("MiniGrid-DoorKey-5x5-v0", "minigrid_doorkey.yaml", 0.9),
    "cartpole": ("CartPole-v1", "cartpole.yaml", 475.0),
}


# ----------------------------------------------------------------------------- PPO

def ppo_env(env_id: str, seed: int):
    import gymnasium as gym
    if env_id.startswith("MiniGrid-"):
        import minigrid  # noqa: F401
        from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper
        return ImgObsWrapper(RGBImgPartialObsWrapper(gym.make(env_id)))
    return gym.make(env_id)


def run_ppo(env_id: str, seed: int, budget: int, eval_every: int, episodes: int) -> list[tuple]:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    torch.set_num_threads(1)
    pixels = env_id.startswith("MiniGrid-")
    venv = make_vec_env(lambda: ppo_env(env_id, seed), n_envs=8, seed=seed)
    model = PPO("CnnPolicy" if pixels else "MlpPolicy", venv, seed=seed, verbose=0,
                policy_kwargs={"normalize_images": True} if pixels else None)
    eval_env = ppo_env(env_id, seed + 10_000)
    history, t0 = [], time.time()

    class Eval(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next = eval_every

        def _on_step(self):
            if self.num_timesteps >= self.next:
                self.next += eval_every
                pause = time.time()
                s, _ = evaluate_policy(model, eval_env, n_eval_episodes=episodes, deterministic=False)
                history.append((self.num_timesteps, round(pause - t0, 2), s))
            return True

    model.learn(total_timesteps=budget, callback=Eval())
    return history


# ----------------------------------------------------------------------------- ours

def run_ours(method: str, config: str, seed: int, budget: int, eval_every: int, episodes: int, extra) -> list[tuple]:
    from agents.trainer import Trainer
    from quatrix_world.config import load_config
    cfg = load_config(["default.yaml", config], [f"agent.kind={method}", f"seed={seed}", f"trainer.total_steps={budget}",
                                                 f"trainer.eval_every={eval_every}", f"trainer.eval_episodes={episodes}",
                                                 f"trainer.checkpoint_every={budget}", "trainer.progress=false",
                                                 "trainer.video_every_eval=false", *extra])
    run_dir = os.path.join("runs", "vs_ppo", f"{method}-{config[:-5]}-{seed}")
    os.makedirs(run_dir, exist_ok=True)
    tr = Trainer(cfg, run_dir, quiet=True)
    tr.train()
    return [(r["step"], r["seconds"], r["eval/return_sampled"]) for r in tr.eval_history]


# ----------------------------------------------------------------------------- summary

def summarise(histories: dict, threshold: float) -> dict:
    steps, secs, finals = [], [], []
    for h in histories.values():
        hit = next(((s, t) for s, t, v in h if v >= threshold), None)
        if hit:
            steps.append(hit[0])
            secs.append(hit[1])
        finals.append(h[-1][2] if h else float("nan"))
    finals = np.array(finals, dtype=float)
    ci = 1.96 * finals.std(ddof=1) / np.sqrt(len(finals)) if len(finals) > 1 else None
    return {"median_steps_to_threshold": float(np.median(steps)) if steps else None,
            "iqr_steps_to_threshold": [float(np.percentile(steps, 25)), float(np.percentile(steps, 75))] if steps else None,
            "median_seconds_to_threshold": float(np.median(secs)) if steps else None,
            "solved_seeds": len(steps), "seeds": len(histories),
            "final_return_mean": float(finals.mean()), "final_return_ci95": None if ci is None else float(ci)}


def plot(env_id: str, per_method: dict, threshold: float, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (method, hs) in enumerate(per_method.items()):
        color = f"C{i}"
        for h in hs.values():
            ax.plot([s for s, _, _ in h], [v for _, _, v in h], color=color, alpha=0.25)
        steps = sorted({s for h in hs.values() for s, _, _ in h})
        med = [np.median([v for h in hs.values() for s2, _, v in h if s2 == s]) for s in steps]
        ax.plot(steps, med, color=color, lw=2, label=method)
    ax.axhline(threshold, color="k", ls="--", lw=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval return")
    ax.set_title(env_id)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    p.add_argument("--methods", nargs="+", default=["ppo", "actor_critic", "grpo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--budget", type=int, default=20_000)
    p.add_argument("--eval-every", type=int, default=2_000)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--set", action="append", default=[], help="override for our methods")
    p.add_argument("--quick", action="store_true", help="1 seed, CartPole, tiny budget (smoke test)")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    a = p.parse_args()
    if a.quick:
        a.envs, a.seeds, a.budget, a.eval_every, a.episodes = ["cartpole"], [0], 1200, 600, 2
        a.set = a.set + ["trainer.prefill=400", "trainer.batch_size=4", "trainer.seq_len=16", "agent.starts=16"]
    out_json = os.path.join(a.results, "vs_ppo_quick.json" if a.quick else "vs_ppo.json")
    results = json.load(open(out_json)) if os.path.exists(out_json) else {"envs": {}}
    for name in a.envs:
        env_id, config, threshold = ENVS[name]
        per_method = {}
        for method in a.methods:
            hs = {}
            for seed in a.seeds:
                if method == "ppo":
                    h = run_ppo(env_id, seed, a.budget, a.eval_every, a.episodes)
                else:
                    h = run_ours(method, config, seed, a.budget, a.eval_every, a.episodes, a.set)
                hs[seed] = h
                d = os.path.join(a.results, "runs" if not a.quick else "runs_quick", method, env_id)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, f"{seed}.csv"), "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["step", "seconds", "score"])
                    w.writerows(h)
                print(f"{env_id} {method} seed {seed}: " + ", ".join(f"{s}:{v:.2f}" for s, _, v in h), flush=True)
            per_method[method] = hs
            results["envs"].setdefault(env_id, {})[method] = dict(summarise(hs, threshold), budget=a.budget,
                                                                  threshold=threshold)
        plot(env_id, per_method, threshold, os.path.join(a.results, f"vs_ppo_{name}{'_quick' if a.quick else ''}.png"))
        tmp = out_json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=1)
        os.replace(tmp, out_json)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
