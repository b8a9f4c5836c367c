"""Collection throughput with env lanes: does `trainer.num_envs` / `trainer.parallel_envs` pay here?

    python bench/collect.py                  # ~2-4 min; writes bench/results/collect.json
    python bench/collect.py --quick          # a few seconds (smoke test)

For each setting (1 env; N lanes in-process via torchrl SerialEnv; N lanes in worker processes via
torchrl ParallelEnv) this drives the trainer's own collection step (`Trainer.collect_step`:
encode the observation, run the core on the episode so far, act, env.step, write
the replay) on MiniGrid-Empty-6x6 pixels with the shipped world model, and reports env steps/s for
random actions (as during prefill) and for the policy's actions. It then times world-model + agent
updates and gives the training throughput these imply at the shipped replay ratio:
steps/s = 1 / (1/collect + replay_ratio * update_seconds). Wall-clock, best of `--repeats`
interleaved repeats.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.rollout import write_json          # noqa: E402
from agents.trainer import Trainer             # noqa: E402
from quatrix_world.config import load_config   # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def trainer_for(config: str, num_envs: int, parallel: bool, prefill: int, root: str) -> Trainer:
    cfg = load_config(["default.yaml", config], [f"trainer.num_envs={num_envs}", f"trainer.parallel_envs={parallel}",
                                                 f"trainer.prefill={prefill}", "trainer.progress=false"])
    return Trainer(cfg, tempfile.mkdtemp(dir=root), quiet=True)


def collect_rate(tr: Trainer, steps: int) -> float:
    """Env steps/s of the trainer's collection step alone (no updates)."""
    tr.start_collection()
    start, t0 = tr.step, time.perf_counter()
    while tr.step - start < steps:
        tr.collect_step()
    return (tr.step - start) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="minigrid_empty.yaml")
    p.add_argument("--lanes", type=int, default=4)
    p.add_argument("--steps", type=int, default=800, help="env steps per measurement")
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "collect.json"))
    a = p.parse_args()
    if a.quick:
        a.config, a.lanes, a.steps, a.updates, a.repeats = "debug.yaml", 2, 40, 2, 1
        a.out = a.out.replace(".json", "_quick.json")
    settings = [("1 env", 1, False), (f"{a.lanes} lanes, SerialEnv", a.lanes, False),
                (f"{a.lanes} lanes, ParallelEnv", a.lanes, True)]
    root = tempfile.mkdtemp(prefix="quatrix-collect-")
    best: dict = {name: {"random_actions": 0.0, "policy_actions": 0.0} for name, _, _ in settings}
    update_s = float("inf")
    for _ in range(a.repeats):
        for name, n, parallel in settings:
            tr = trainer_for(a.config, n, parallel, 10**9, root)          # prefill never ends: random
            best[name]["random_actions"] = max(best[name]["random_actions"], collect_rate(tr, a.steps))
            tr.env.close()
            tr = trainer_for(a.config, n, parallel, tr.cfg.trainer.seq_len, root)   # the policy acts
            best[name]["policy_actions"] = max(best[name]["policy_actions"], collect_rate(tr, a.steps))
            if n == 1:                        # updates do not depend on the lanes: time them once per repeat
                t0 = time.perf_counter()
                for _ in range(a.updates):
                    tr.train_step()
                update_s = min(update_s, (time.perf_counter() - t0) / a.updates)
            tr.env.close()
    ratio = tr.cfg.trainer.replay_ratio
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for name, n, parallel in settings:
        b = best[name]
        train_rate = 1.0 / (1.0 / b["policy_actions"] + ratio * update_s)
        rows.append({"setting": name, "num_envs": n, "parallel_envs": parallel,
                     "collect_steps_per_s_random": round(b["random_actions"], 1),
                     "collect_steps_per_s_policy": round(b["policy_actions"], 1),
                     "train_steps_per_s_implied": round(train_rate, 2)})
    result = {"config": a.config, "update_seconds": round(update_s, 4), "replay_ratio": ratio,
              "cpu_count": os.cpu_count(), "rows": rows}
    write_json(result, a.out)
    print(f"update (world model + agent): {update_s * 1000:.0f} ms; replay ratio {ratio}")
    print("| setting | collect steps/s (random) | collect steps/s (policy) | training steps/s (implied) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['collect_steps_per_s_random']} | {r['collect_steps_per_s_policy']} | "
              f"{r['train_steps_per_s_implied']} |")


if __name__ == "__main__":
    main()
