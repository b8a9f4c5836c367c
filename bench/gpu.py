"""GPU figures for bench/results/gpu.json (run by bench/gpu.sh on a machine with CUDA).

    python bench/gpu.py --out bench/results/gpu.json
    python bench/gpu.py --device cpu --updates 3 --out /tmp/gpu_cpu.json   # the same script on the CPU

Measures, on `--device`: one training update (world model + agent, `Trainer.train_step`) and one
acting step at the default config (MiniGrid-Empty-6x6, 56x56 pixels + mission) and at a 64x64
pixel config (MiniGrid-Empty-8x8 full view, 8-pixel tiles), for fp32 and bf16 autocast; the
default config's update compiled (`run.compile`, bf16) and captured as CUDA graphs
(`run.cudagraphs`), its compile time excluded (the warm-up updates compile it); and
imagination throughput (`QuatrixWorld.imagine`, 1,024 starts x horizon 16) in imagined steps/s.
Wall-clock with the device synchronised; the update returns its metrics to the host, which
synchronises it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import torch  # noqa: E402

from update_speed import measure  # noqa: E402

from quatrix_world.files import write_json  # noqa: E402

CONFIGS = {"default_56px": [], "pixels_64px": ["env.id=MiniGrid-Empty-8x8-v0", "env.full_view=true"]}


def imagination_rate(device: str, starts: int = 1024, horizon: int = 16, repeats: int = 5) -> float:
    from torch.distributions import Categorical
    from agents.collect import build_env, env_specs
    from quatrix_world.config import load_config
    from quatrix_world.world import QuatrixWorld
    cfg = load_config(["default.yaml"])
    obs_desc, act_desc = env_specs(build_env(cfg, 0))
    world = QuatrixWorld(cfg.world, obs_desc, act_desc).to(device).eval()
    K = cfg.agent.context_len
    z = torch.nn.functional.one_hot(torch.randint(0, 32, (starts, K, 32), device=device), 32).float().flatten(-2)
    act = torch.randint(0, 7, (starts, K), device=device)
    is_init = torch.zeros(starts, K, dtype=torch.bool, device=device)
    policy = lambda feat: Categorical(logits=torch.zeros(feat.shape[0], 7, device=feat.device))
    best = float("inf")
    for _ in range(repeats):
        state = world.observe_latents(z, act, is_init)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        world.imagine(state, policy, horizon)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return starts * horizon / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--act", type=int, default=200)
    p.add_argument("--out", default=os.path.join(HERE, "results", "gpu.json"))
    a = p.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: torch sees no CUDA GPU — run it on a GPU machine or pass --device cpu")
    out = {"device": a.device, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None, "configs": {}}
    for name, sets in CONFIGS.items():
        for precision in ("fp32", "bf16"):
            r = measure(os.path.join(HERE, ".."), [], [f"run.device={a.device}", f"run.precision={precision}", *sets],
                        a.updates, a.act)
            out["configs"][f"{name}/{precision}"] = {"update_ms": r["update_ms_wall"], "act_ms": r["act_ms_wall"]}
            print(name, precision, out["configs"][f"{name}/{precision}"], flush=True)
    compiled = {"compile": ["run.compile=true"]}
    if a.device.startswith("cuda"):
        compiled["cudagraphs"] = ["run.compile=true", "run.cudagraphs=true"]
    for name, sets in compiled.items():
        r = measure(os.path.join(HERE, ".."), [], [f"run.device={a.device}", "run.precision=bf16", *sets],
                    a.updates, a.act)
        out["configs"][f"default_56px/bf16/{name}"] = {"update_ms": r["update_ms_wall"], "act_ms": r["act_ms_wall"]}
        print("default_56px bf16", name, out["configs"][f"default_56px/bf16/{name}"], flush=True)
    out["imagined_steps_per_s"] = round(imagination_rate(a.device))
    print("imagination", out["imagined_steps_per_s"], "steps/s", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    write_json(out, a.out)


if __name__ == "__main__":
    main()
