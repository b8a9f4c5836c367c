"""Q-Compass vs attention inside the world model (not a test).

    python bench/ablation.py --envs minigrid_empty cartpole --seeds 0 1 2 3 4
    python bench/ablation.py --quick          # debug config, one seed: checks the plumbing

Same world model, same budget and protocol as bench/learning.py; only the dynamics core's mixer
changes: `qcompass` (plain), `qcompass_compressed` (content = W_c(state*action)) and `mha`.
Per run: world-model loss at each evaluation, final return, env steps to threshold, core
parameters, train-step time, imagination step time and cache bytes per token.
Writes bench/results/ablation.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.rollout import write_json     # noqa: E402

from bench.learning import THRESHOLDS, first_crossing          # noqa: E402

MIXERS = {"qcompass": ["world.mixer=qcompass", "world.compressed=false"],
          "qcompass_compressed": ["world.mixer=qcompass", "world.compressed=true"],
          "mha": ["world.mixer=mha", "world.compressed=false"]}


def measure(trainer, repeats: int = 5) -> dict:
    """Train-step and imagination-step times and cache size, on the trained model."""
    w = trainer.world
    core_params = sum(p.numel() for p in w.core.parameters())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    batch = trainer.replay.sample()
    with torch.no_grad():
        _, _, aux = w.loss(batch)
    state = trainer.start_states(aux["z"], w.unpack(batch, need_targets=False))
    state = w.branch(state, max(1, 256 // state["z"].shape[0]))
    policy = trainer.agent.actor
    t0 = time.perf_counter()
    w.imagine(state, policy, 16)
    imag = (time.perf_counter() - t0) / 16
    tokens = len(state["caches"][0])
    cache_bytes = state["caches"].nbytes() / max(1, tokens * state["z"].shape[0])
    return {"core_params": core_params, "train_step_ms": 1000 * sorted(times)[len(times) // 2],
            "imagine_step_ms_batch256": 1000 * imag, "cache_bytes_per_token": cache_bytes}


def world_losses(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        return [(int(r[0]), float(r[3])) for r in list(csv.reader(f))[1:] if r[2] == "loss/world"]


def main() -> None:
    from agents.trainer import Trainer
    from quatrix_world.config import load_config
    p = argparse.ArgumentParser()
    p.add_argument("--envs", nargs="+", default=["minigrid_empty", "cartpole"])
    p.add_argument("--mixers", nargs="+", default=list(MIXERS), choices=list(MIXERS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", default=os.path.join("runs", "ablation"), help="run folders (--quick: a temporary one)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ablation.json"))
    a = p.parse_args()
    if a.quick:
        a.envs, a.seeds = ["debug"], [0]
        a.out = a.out.replace(".json", "_quick.json")
        a.runs = tempfile.mkdtemp(prefix="quatrix-ablation-")
    results = json.load(open(a.out)) if os.path.exists(a.out) else {}
    for env in a.envs:
        for mixer in a.mixers:
            for seed in a.seeds:
                over = [f"seed={seed}", "trainer.progress=false", "trainer.video_every_eval=false",
                        f"trainer.target_return={THRESHOLDS[env]}", *MIXERS[mixer], *a.set]
                if not a.quick:
                    over += ["trainer.eval_every=1000", "trainer.eval_episodes=20"]
                cfg = load_config(["default.yaml", f"{env}.yaml"], over)
                run_dir = os.path.join(a.runs, f"{env}-{mixer}-{seed}")
                os.makedirs(run_dir, exist_ok=True)
                tr = Trainer(cfg, run_dir, quiet=True, force=True)
                tr.train()
                steps, secs = first_crossing(tr.eval_history, THRESHOLDS[env])
                last = tr.eval_history[-1]
                r = {"steps_to_threshold": steps, "seconds_to_threshold": secs,
                     "final_return": last["eval/return_sampled"],
                     "world_loss": world_losses(run_dir), **measure(tr)}
                results.setdefault(env, {}).setdefault(mixer, {})[str(seed)] = r
                print(f"{env} {mixer} seed {seed}: steps {steps}, final {r['final_return']:.2f}, core "
                      f"{r['core_params']:,} params, train {r['train_step_ms']:.0f} ms, imagine "
                      f"{r['imagine_step_ms_batch256']:.1f} ms/step, cache {r['cache_bytes_per_token']:.0f} B/token",
                      flush=True)
                write_json(results, a.out)


if __name__ == "__main__":
    main()
