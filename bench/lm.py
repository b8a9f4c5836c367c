"""LM sanity check (not a test): character-level QuatrixLM with Q-Compass vs the same LM with MHA.

    python bench/lm.py                # ~1000 steps each, a few minutes on one core
    python bench/lm.py --quick

Text: Python's own documentation topics (pydoc_data/topics.py ships with CPython) — no downloads.
Equal budget (same steps, batch, sequence length, width, depth, optimiser); reports parameters,
validation loss (nats/char) and seconds. Writes bench/results/lm.json.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from agents.rollout import write_json     # noqa: E402

from quatrix_world import QuatrixConfig, QuatrixLM     # noqa: E402


def corpus() -> str:
    import pydoc_data.topics as t
    return "\n".join(t.topics[k] for k in sorted(t.topics))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "lm.json"))
    a = p.parse_args()
    if a.quick:
        a.steps = 60
        a.out = a.out.replace(".json", "_quick.json")
    torch.set_num_threads(1)
    text = corpus()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    train, val = ids[:split], ids[split:]
    B, L = 32, 128
    results = {"corpus_chars": len(ids), "vocab": len(chars), "steps": a.steps, "batch": B, "seq_len": L,
               "torch": torch.__version__, "models": {}}
    for mixer in ("qcompass", "mha"):
        torch.manual_seed(0)
        cfg = QuatrixConfig(vocab_size=len(chars), hidden_size=128, num_layers=4, max_seq_len=L, q_rank=32,
                            num_heads=4, mixer=mixer)
        model = QuatrixLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        for step in range(a.steps):
            idx = torch.randint(0, len(train) - L - 1, (B,), generator=g)
            x = torch.stack([train[i:i + L] for i in idx])
            y = torch.stack([train[i + 1:i + L + 1] for i in idx])
            lr = 2e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / a.steps))
            for group in opt.param_groups:
                group["lr"] = lr
            loss = F.cross_entropy(model(x)["logits"].flatten(0, 1), y.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        seconds = time.time() - t0
        model.eval()
        with torch.no_grad():
            n = (len(val) - 1) // L
            xs = val[: n * L].reshape(n, L)[:64]
            ys = val[1: n * L + 1].reshape(n, L)[:64]
            vloss = float(F.cross_entropy(model(xs)["logits"].flatten(0, 1), ys.flatten()))
        mixer_params = sum(p.numel() for b in model.blocks for p in b.mixer.parameters()) \
            if hasattr(model, "blocks") else None
        results["models"][mixer] = {"params": sum(p.numel() for p in model.parameters()),
                                    "mixer_params": mixer_params, "val_loss": vloss,
                                    "train_loss_last": float(loss), "seconds": round(seconds, 1)}
        print(f"{mixer}: val loss {vloss:.3f} nats/char, params {results['models'][mixer]['params']:,}, "
              f"{seconds:.0f} s", flush=True)
    write_json(results, a.out)


if __name__ == "__main__":
    main()
