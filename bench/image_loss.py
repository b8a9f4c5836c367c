"""Does the world model's latent hold MinAtar's one-pixel objects? (benchmark, not a test)

    python bench/image_loss.py --env MinAtar/Breakout-v1 --losses mse binary --updates 2000 \
        --out bench/results/image_loss.json

The world model alone (no agent) of the shipped configs/minatar.yaml, with `world.encoder.image_loss`
set to each of `--losses`, trained on a replay of random play (`--steps` env steps, the trainer's own
collector and replay, batches of 16 x 32). Every `--every` updates, `--frames` frames from the replay are
encoded (the posterior's mode, as acting does) and decoded, and each channel's lit pixels are compared:
recall = the fraction of lit pixels decoded lit, precision = the fraction of pixels decoded lit that are
lit. A channel the latent ignores decodes its average (nothing lit), recall 0.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.rollout import write_json                      # noqa: E402
from agents.trainer import Trainer                         # noqa: E402
from quatrix_world.config import load_config               # noqa: E402


def channel_scores(world, key: str, frames: torch.Tensor) -> list[dict]:
    """frames uint8 [N, H, W, C] -> per channel {recall, precision, lit per frame}."""
    world.eval()
    with torch.no_grad():
        decoded = world.decode(world.encode_mode({key: frames}))[key]
    out = []
    for c in range(frames.shape[-1]):
        real, pred = frames[..., c] > 127, decoded[..., c] > 127
        hit = (real & pred).sum().item()
        out.append({"recall": round(hit / max(1, real.sum().item()), 3),
                    "precision": round(hit / max(1, pred.sum().item()), 3),
                    "lit_per_frame": round(real.sum().item() / len(frames), 2)})
    return out


def run(env_id: str, loss_kind: str, updates: int, steps: int, every: int, n_frames: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    cfg = load_config(["default.yaml", "minatar.yaml"],
                      [f"env.id={env_id}", f"world.encoder.image_loss={loss_kind}", f"seed={seed}",
                       "trainer.progress=false", "run.update_threads=1"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, quiet=True, force=True)
        trainer.start_collection()
        for _ in range(steps):
            trainer.collector.step(random=True)       # uniformly random actions
        world = trainer.world
        key = next(iter(world.obs_desc))
        frames = trainer.replay.sample()[key].flatten(0, 1)[:n_frames]
        opt = trainer.world_opt                       # the trainer's own Adam for the world model
        rows, t0 = [], time.process_time()
        for u in range(1, updates + 1):
            world.train()
            loss, metrics, _ = world.loss(trainer.replay.sample())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(world.parameters(), cfg.trainer.world_grad_clip)
            opt.step()
            if u % every == 0:
                rows.append({"update": u, "cpu_seconds": round(time.process_time() - t0, 1),
                             "kl": round(float(metrics["world/kl"]), 3),
                             "channels": channel_scores(world, key, frames)})
                print(loss_kind, rows[-1], flush=True)
        trainer.close_envs()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="MinAtar/Breakout-v1")
    p.add_argument("--losses", nargs="+", default=["mse", "binary"], choices=["mse", "binary"])
    p.add_argument("--updates", type=int, default=2000)
    p.add_argument("--steps", type=int, default=20_000, help="env steps of random play in the replay")
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--frames", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "image_loss.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    results = {"env": a.env, "steps": a.steps, "updates": a.updates, "seed": a.seed,
               "losses": {k: run(a.env, k, a.updates, a.steps, a.every, a.frames, a.seed) for k in a.losses}}
    write_json(results, a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
