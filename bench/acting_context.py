"""Does the acting context matter? One trained checkpoint evaluated with different acting contexts
(benchmark, not a test).

    python bench/acting_context.py RUN_OR_CHECKPOINT --episodes 100 --windows 31 24 \
        --out bench/results/acting_context.json

The trainer acts on z = the posterior's mode, with a context of window // 2 to `window` real
tokens (`window` = trainer.seq_len - 1); the actor trains on imagined features: sampled z after
context_len to context_len + horizon tokens. This plays the same fresh episodes (sampled actions,
seeds 40,000,000 + i) once per (z: mode | sample) x window and reports the mean return ± its
standard error, so a mismatch between the features the actor acts on and those it trained on shows
as a difference in score.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.api import load                                # noqa: E402
from agents.collect import build_env                       # noqa: E402
from agents.policy import play_episodes                    # noqa: E402
from agents.rollout import write_json                      # noqa: E402
from quatrix_world.latents import onehot_sample            # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("checkpoint")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--windows", type=int, nargs="+", default=None, help="default: seq_len-1 and context_len+horizon")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    run = load(a.checkpoint)
    cfg, world = run.cfg, run.world
    windows = a.windows or [cfg.trainer.seq_len - 1, cfg.agent.context_len + cfg.agent.horizon]
    envs = [build_env(cfg, cfg.seed + 30_000 + i) for i in range(a.episodes)]
    cap = getattr(envs[0], "quatrix_info", {}).get("max_episode_steps") or cfg.trainer.eval_max_steps
    mode = world.encode_mode

    def sampled(obs):                               # a posterior sample instead of its mode
        logp = world.encode({k: obs[k][:, None] for k in world.obs_desc})
        return onehot_sample(logp.exp()).flatten(-2)[:, 0]

    rows = []
    for z, encode in (("mode", mode), ("sample", sampled)):
        world.encode_mode = encode
        for w in windows:
            torch.manual_seed(0)
            eps = play_episodes(world, run.agent, envs, w, [40_000_000 + i for i in range(a.episodes)], False,
                                max_steps=int(cap))
            r = np.array([e["return"] for e in eps])
            rows.append({"z": z, "window": w, "mean": float(r.mean()), "sem": float(r.std() / np.sqrt(len(r)))})
            print(f"z={z:6s} window={w:3d}: {r.mean():.3f} ± {r.std() / np.sqrt(len(r)):.3f}", flush=True)
    world.encode_mode = mode
    out = {"checkpoint": os.path.abspath(a.checkpoint), "env": cfg.env.id, "step": run.step,
           "episodes": a.episodes, "rows": rows}
    if a.out:
        results = json.load(open(a.out)) if os.path.exists(a.out) else {}
        results[f"{cfg.env.id}@{run.step}"] = out
        write_json(results, a.out)


if __name__ == "__main__":
    main()
