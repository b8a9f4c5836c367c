"""Soak (not a test): train for a fixed wall-clock time and sample the process RSS.

    python bench/soak.py --minutes 60                    # the full soak
    python bench/soak.py --minutes 2 --every 10          # a quick look

Trains on MiniGrid-Empty-6x6 (pixels) with the shipped config and a small replay capacity so the
buffer fills, then wraps, well inside the warm-up; samples RSS every `--every` seconds from a side
thread. After the warm-up (first 20% of samples) RSS should stay within ±10% of its post-warm-up
median; the replay buffer's bytes must stay bounded by its capacity. Writes
bench/results/soak.json and soak.png.

Why the capacity must fill during the warm-up: torchrl's LazyTensorStorage reserves the whole
capacity at the first write, but the OS commits its pages only as rows are written, so RSS grows by
the replay's size while it fills (measured: +4 MB after the first row of a 20,000-row MiniGrid
replay, +104 MB at 10,000 rows, +196 MB when full, +0 after wrapping). A soak whose replay is
still filling measures that, not a leak (our first 30-minute soak, 20,000 rows, did exactly that).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    from agents.trainer import Trainer
    from quatrix_world.config import load_config
    p = argparse.ArgumentParser()
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--every", type=float, default=60, help="seconds between RSS samples")
    p.add_argument("--capacity", type=int, default=4_000, help="replay rows (fills in ~2 minutes)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "soak.json"))
    a = p.parse_args()
    cfg = load_config(["default.yaml", "minigrid_empty.yaml"], [
        "trainer.total_steps=100000000", f"trainer.replay_capacity={a.capacity}", "trainer.progress=false",
        "trainer.eval_every=5000", "trainer.checkpoint_every=5000", "run.name=soak"])
    run_dir = os.path.join("runs", "soak")
    os.makedirs(run_dir, exist_ok=True)
    trainer = Trainer(cfg, run_dir, quiet=True, force=True)
    samples, t0 = [], time.time()

    def sample():
        while time.time() - t0 < a.minutes * 60:
            samples.append({"seconds": round(time.time() - t0, 1), "rss_mb": round(rss_mb(), 1),
                            "step": trainer.step, "replay_rows": len(trainer.replay),
                            "replay_mb": round(trainer.replay.memory_bytes() / 2**20, 1)})
            print(samples[-1], flush=True)
            time.sleep(a.every)
        trainer.request_stop()                # same path as Ctrl-C: stop at a step boundary

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    trainer.train()
    thread.join()
    warm = samples[max(1, len(samples) // 5):]
    rss = sorted(s["rss_mb"] for s in warm)
    median = rss[len(rss) // 2]
    result = {"minutes": a.minutes, "samples": samples, "post_warmup_median_mb": median,
              "post_warmup_max_dev": max(abs(r - median) / median for r in rss),
              "replay_capacity": a.capacity, "replay_mb_max": max(s["replay_mb"] for s in samples),
              "steps": trainer.step}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([s["seconds"] / 60 for s in samples], [s["rss_mb"] for s in samples], marker="o", label="RSS")
    ax.plot([s["seconds"] / 60 for s in samples], [s["replay_mb"] for s in samples], marker=".", label="replay")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out.replace(".json", ".png"), dpi=80)
    print(f"RSS after warm-up: median {median:.0f} MB, max deviation {100 * result['post_warmup_max_dev']:.1f}%; "
          f"replay max {result['replay_mb_max']} MB (capacity {a.capacity} rows)")


if __name__ == "__main__":
    main()
