"""Imagination throughput (KV cache vs full recompute), per-step cache cost, world-model training
FLOP/s vs this machine's matmul peak, and KV-cache bytes per token.

    python bench/imagination.py            # full: batch {256, 1024} x horizon {16, 64}; bench/results/imagination.json
    python bench/imagination.py --quick    # < 1 min: batch 256 only, fewer repeats; bench/results/imagination_quick.json
    python bench/imagination.py --quick --tiny --out /tmp/x.json   # seconds: tiny world (the smoke test)

World: the DEFAULT config (``load_config(["default.yaml"]).world``) for a MiniGrid-like spec
(pixels uint8 [56, 56, 3] + mission tokens [16] with vocab 70, 7 discrete actions). Imagination
cost does not depend on the encoder. Start states: ``world.observe_latents`` on random one-hot
latents/actions with K=8 context steps; policy: uniform ``Categorical(logits=zeros)``.

Clocks: every measurement records wall time and process CPU time. At 1 thread (the default, as in
training runs) the CPU time is the primary clock — it barely moves when other processes compete
for the cores — and wall time is reported beside it. With ``--threads N > 1`` wall time is primary.
Repeats are interleaved (each repeat times every variant once, in turn) so load drift hits all
variants alike; the median over repeats is reported.
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time

import torch
from tensordict import TensorDict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from quatrix_world.config import EncoderConfig, WorldConfig, load_config  # noqa: E402
from quatrix_world.files import write_json  # noqa: E402
from quatrix_world.qcompass import cache_bytes_per_token  # noqa: E402
from quatrix_world.world import QuatrixWorld  # noqa: E402

N_ACT, VOCAB, MISSION_LEN, PIX = 7, 70, 16, 56
CONTEXT = 8


def obs_spec(pix=PIX):
    return {"pixels": {"kind": "image", "shape": [pix, pix, 3], "dtype": "uint8", "vocab": None},
            "mission": {"kind": "tokens", "shape": [MISSION_LEN], "dtype": "int64", "vocab": VOCAB}}


ACT = {"kind": "discrete", "n": N_ACT}


def tiny_world_cfg(**kw) -> WorldConfig:
    return WorldConfig(latent_groups=4, latent_classes=8, hidden_size=32, num_layers=2, q_rank=8, num_heads=2,
                       max_seq_len=128, reward_bins=31,
                       encoder=EncoderConfig(hidden_size=16, q_rank=4, num_heads=2, patch_size=8), **kw)


def build_world(cfg: WorldConfig, pix=PIX, seed=0) -> QuatrixWorld:
    torch.manual_seed(seed)
    return QuatrixWorld(cfg, obs_spec(pix), ACT)


def policy(feat):
    return torch.distributions.Categorical(logits=torch.zeros(feat.shape[0], N_ACT))


def start_state(world, batch, K=CONTEXT, seed=1):
    g = torch.Generator().manual_seed(seed)
    G, C = world.cfg.latent_groups, world.cfg.latent_classes
    z = torch.nn.functional.one_hot(torch.randint(C, (batch, K, G), generator=g), C).float().flatten(-2)
    a = torch.randint(N_ACT, (batch, K), generator=g)
    is_init = torch.zeros(batch, K, dtype=torch.bool)
    is_init[:, 0] = True
    return world.observe_latents(z, a, is_init)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def primary(wall, cpu):
    return cpu if torch.get_num_threads() == 1 else wall


# ----------------------------------------------------------------------------- imagination

def bench_imagine(world, batches, horizons, repeats):
    rows = []
    for B in batches:
        state = start_state(world, B)
        variants = [(H, c) for H in horizons for c in (True, False)]
        for H, c in variants:                                          # warm-up
            world.imagine(state, policy, min(H, 4), use_cache=c)
        wall = {v: [] for v in variants}
        cpu = {v: [] for v in variants}
        for _ in range(repeats):
            for H, c in variants:
                torch.manual_seed(0)
                w, p, _ = timed(lambda: world.imagine(state, policy, H, use_cache=c))
                wall[(H, c)].append(w)
                cpu[(H, c)].append(p)
        for H, c in variants:
            mw, mc = statistics.median(wall[(H, c)]), statistics.median(cpu[(H, c)])
            t = primary(mw, mc)
            rows.append({"batch": B, "horizon": H, "cache": c, "steps_per_s": round(B * H / t, 1),
                         "wall_median_s": round(mw, 4), "cpu_median_s": round(mc, 4),
                         "wall_steps_per_s": round(B * H / mw, 1), "repeats": repeats})
        for H in horizons:
            r_c = next(r for r in rows if r["batch"] == B and r["horizon"] == H and r["cache"])
            r_n = next(r for r in rows if r["batch"] == B and r["horizon"] == H and not r["cache"])
            r_c["speedup_vs_recompute"] = r_n["speedup_vs_recompute"] = round(r_c["steps_per_s"] / r_n["steps_per_s"], 2)
            print(f"imagine  batch={B:5d} horizon={H:3d}   cache {r_c['steps_per_s']:11.0f} steps/s   "
                  f"recompute {r_n['steps_per_s']:11.0f} steps/s   x{r_c['speedup_vs_recompute']}", flush=True)
    return rows


def bench_step_times(world, batch, horizon, repeats):
    """Time each world.step of a cached rollout on its own -> median seconds per step index."""
    base = start_state(world, batch)
    per = [[] for _ in range(horizon)]
    for rep in range(repeats + 1):                                    # repeat 0 is the warm-up
        torch.manual_seed(rep)
        state = dict(base, caches=base["caches"].clone())
        z, h = state["z"], state["h"]
        for t in range(horizon):
            a = policy(world.features(z, h)).sample()
            w, c, state = timed(lambda: world.step(state, a))
            z, h = state["z"], state["h"]
            if rep:
                per[t].append(primary(w, c))
    return [statistics.median(p) for p in per]


# ----------------------------------------------------------------------------- training step

def train_batch(world, B, T, pix, seed=2):
    g = torch.Generator().manual_seed(seed)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[:, 0] = True
    is_init[0, T // 2] = True                                          # one mid-sequence episode start
    term = torch.zeros(B, T, 1, dtype=torch.bool)
    term[0, T // 2 - 1] = True
    reward = torch.zeros(B, T, 1)
    reward[:, T // 2 - 1] = 1.0
    return TensorDict({
        "pixels": torch.randint(0, 256, (B, T, pix, pix, 3), dtype=torch.uint8, generator=g),
        "mission": torch.randint(1, VOCAB, (B, T, MISSION_LEN), generator=g),
        "action": torch.randint(N_ACT, (B, T), generator=g),
        "is_init": is_init,
        "next": {"reward": reward, "terminated": term, "truncated": torch.zeros(B, T, 1, dtype=torch.bool)},
    }, batch_size=[B, T])


def bench_train(world, B, T, pix, repeats, lr=1e-4, clip=1000.0):
    from torch.utils.flop_counter import FlopCounterMode

    batch = train_batch(world, B, T, pix)
    opt = torch.optim.Adam(world.parameters(), lr=lr, eps=1e-8)
    world.train()

    def step():
        loss, _, _ = world.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(world.parameters(), clip)
        opt.step()
        return loss

    step()                                                             # warm-up (Adam state)
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _, _ = world.loss(batch)
        loss.backward()
    flops = counter.get_total_flops()
    by_op = {str(k): int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    wall, cpu = [], []
    for _ in range(repeats):
        w, c, _ = timed(step)
        wall.append(w)
        cpu.append(c)
    # what bounds it: one profiled step, top ops by self CPU time
    top = []
    try:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        evs = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in evs) or 1
        top = [{"op": e.key, "self_cpu_frac": round(e.self_cpu_time_total / total, 3), "calls": e.count}
               for e in evs[:10]]
        mm = sum(e.self_cpu_time_total for e in evs if e.key in (
            "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_mkldnn_convolution",
            "aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution",
            "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_flash_attention_for_cpu_backward"))
        top.append({"op": "(all matmul/conv/flash-attention kernels)", "self_cpu_frac": round(mm / total, 3)})
    except Exception as e:  # the profiler is diagnosis only
        top = [{"error": repr(e)}]
    return {"B": B, "T": T, "flops": flops, "flops_by_op": by_op,
            "wall_median_s": statistics.median(wall), "cpu_median_s": statistics.median(cpu),
            "wall_min_s": min(wall), "cpu_min_s": min(cpu), "repeats": repeats, "profile_top": top}


def matmul_peak(n, repeats):
    """fp32 n x n matmul FLOP/s at the current thread count -> (median-clock FLOP/s, best-wall FLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    wall, cpu = [], []
    for _ in range(repeats):
        w, c, _ = timed(lambda: a @ b)
        wall.append(w)
        cpu.append(c)
    f = 2 * n ** 3
    return {"n": n, "flops_per_s": f / primary(min(wall), min(cpu)), "wall_flops_per_s": f / min(wall),
            "cpu_flops_per_s": f / min(cpu), "repeats": repeats}


# ----------------------------------------------------------------------------- cache bytes

def cache_bytes(base_cfg: WorldConfig, pix, K=CONTEXT, batch=4):
    out = {}
    for name, kw in {"qcompass": {}, "qcompass_compressed": {"compressed": True}, "mha": {"mixer": "mha"}}.items():
        cfg = WorldConfig(**{**base_cfg.__dict__, **kw})
        w = build_world(cfg, pix)
        st = start_state(w, batch, K)
        tokens = st["caches"].seq_len()
        nb = st["caches"].nbytes()
        per_tok = nb / (batch * tokens)
        formula = cache_bytes_per_token(cfg.hidden_size, cfg.q_rank, cfg.mixer, cfg.compressed) * cfg.num_layers
        out[name] = {"bytes_per_token_all_layers": per_tok, "bytes_per_token_per_layer": per_tok / cfg.num_layers,
                     "formula_all_layers": formula, "layers": cfg.num_layers}
        print(f"cache    {name:20s} {per_tok:7.0f} B/token ({cfg.num_layers} layers; formula {formula})", flush=True)
    return out


# ----------------------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 256 only, fewer repeats (< 1 min)")
    ap.add_argument("--tiny", action="store_true", help="tiny world and batches (for the smoke test; seconds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as training runs use)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(here, "results", "imagination_quick.json" if (args.quick or args.tiny)
                                   else "imagination.json")
    full_cfg = load_config(["default.yaml"])
    if args.tiny:
        wcfg, pix = tiny_world_cfg(), 16
        batches, horizons, train_bt, peak_n = [8], [16, 64], (2, 8), 256
        repeats = args.repeats or 1
    else:
        wcfg, pix = full_cfg.world, PIX
        batches = [256] if args.quick else [256, 1024]
        horizons = [16, 64]
        train_bt = (full_cfg.trainer.batch_size, full_cfg.trainer.seq_len)
        peak_n = 1024 if args.quick else 2048
        repeats = args.repeats or (1 if args.quick else 5)
    load0, t0 = os.getloadavg(), time.time()

    world = build_world(wcfg, pix)
    world.eval()
    print(f"world: hidden {wcfg.hidden_size}, {wcfg.num_layers} layers, q_rank {wcfg.q_rank}, heads {wcfg.num_heads}, "
          f"latents {wcfg.latent_groups}x{wcfg.latent_classes}, {sum(p.numel() for p in world.parameters()):,} params; "
          f"{torch.get_num_threads()} thread(s); clock: {'process CPU' if args.threads == 1 else 'wall'}", flush=True)
    rows = bench_imagine(world, batches, horizons, repeats)

    H_step = 64
    step_s = bench_step_times(world, batches[0], H_step, repeats=max(3, repeats) if not args.tiny else 2)
    ratio = step_s[H_step - 1] / step_s[0]
    print(f"step     batch={batches[0]} cached world.step: step 1 {step_s[0] * 1e3:.2f} ms, step {H_step} "
          f"{step_s[H_step - 1] * 1e3:.2f} ms  (x{ratio:.2f}; context {CONTEXT})", flush=True)

    Bt, Tt = train_bt
    train = bench_train(build_world(wcfg, pix), Bt, Tt, pix, repeats=max(2, repeats) if args.quick or args.tiny else 5)
    peak = matmul_peak(peak_n, repeats=3 if (args.quick or args.tiny) else 10)
    t_train = primary(train["wall_median_s"], train["cpu_median_s"])
    achieved = train["flops"] / t_train
    frac = achieved / peak["flops_per_s"]
    frac_best = (train["flops"] / primary(train["wall_min_s"], train["cpu_min_s"])) / peak["flops_per_s"]
    print(f"train    B={Bt} T={Tt} fwd+bwd+Adam: {t_train * 1e3:.0f} ms, {train['flops'] / 1e9:.2f} GFLOP (fwd+bwd) "
          f"-> {achieved / 1e9:.1f} GFLOP/s; matmul peak ({peak_n}^2 fp32) {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
          f"-> {frac * 100:.1f}% of peak", flush=True)
    for r in train["profile_top"][:6] + train["profile_top"][-1:]:
        print(f"           {r.get('op', r.get('error')):60s} {r.get('self_cpu_frac', '')}")

    cb = cache_bytes(wcfg, pix)

    b0 = batches[0]
    sp = next(r["speedup_vs_recompute"] for r in rows if r["batch"] == b0 and r["horizon"] == 64 and r["cache"])
    result = {
        "speedup_h64": sp,
        "speedup_h64_batch": b0,
        "step_time_ratio_64_vs_1": round(ratio, 3),
        "train_flops_fraction": round(frac, 4),
        "train_flops_fraction_best": round(frac_best, 4),
        "table": rows,
        "step_times_ms": [round(s * 1e3, 4) for s in step_s],
        "train": {k: v for k, v in train.items()} | {
            "achieved_flops_per_s": achieved, "flops_note": "FlopCounterMode over loss fwd+bwd (matmuls/convs/SDPA; "
            "elementwise, norms, softmax and the Adam update are not counted)"},
        "matmul_peak": peak,
        "cache_bytes_per_token": cb,
        "config": {"world": {k: v for k, v in wcfg.__dict__.items() if k != "encoder"} | {"encoder": wcfg.encoder.__dict__},
                   "obs": obs_spec(pix), "action": ACT, "context": CONTEXT, "batches": batches, "horizons": horizons,
                   "policy": "Categorical(logits=zeros)", "tiny": args.tiny, "quick": args.quick},
        "clock": "process_cpu" if torch.get_num_threads() == 1 else "wall",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": round(time.time() - t0, 1),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for k in ("speedup_h64", "step_time_ratio_64_vs_1", "train_flops_fraction"):
        if not (isinstance(result[k], float) and math.isfinite(result[k]) and result[k] > 0):
            raise SystemExit(f"bad result {k}={result[k]!r}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_json(result, out)
    print(f"\nspeedup_h64={sp} (batch {b0})  step_time_ratio_64_vs_1={ratio:.2f}  train_flops_fraction={frac:.3f}"
          f"  [{result['elapsed_s']} s] -> {out}")
    return result


if __name__ == "__main__":
    main()
