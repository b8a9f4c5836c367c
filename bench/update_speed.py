"""Cost of one training update and of one acting step, in process CPU time (benchmark, not a test).

    python bench/update_speed.py                                  # the default config (Empty-6x6 pixels)
    python bench/update_speed.py --config cartpole.yaml --updates 30
    python bench/update_speed.py --code /path/to/other/checkout   # the same measurement on other code
    python bench/update_speed.py --compare OLD_CHECKOUT --out bench/results/update_speed.json
    python bench/update_speed.py --compare OLD_CHECKOUT --new-set run.update_threads=1   # one core each

Builds the real `Trainer` from the config in a temporary folder, fills the replay with the
prefill's random steps, then times `--updates` calls of `Trainer.train_step` (one world-model
gradient step and one agent update) and `--act` policy steps of `Trainer.collect_step` after
warm-up. CPU time (`time.process_time`) is the measure, so a busy second core changes it little;
wall-clock is reported beside it. `--compare` runs this script on the other checkout and on this
one in turns (old, new, old, new, ...), each in its own process, and reports the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(code: str, config: list[str], sets: list[str], updates: int, act: int) -> dict:
    sys.path.insert(0, code)
    import torch
    from agents.trainer import Trainer
    from quatrix_world.config import load_config
    cfg = load_config(["default.yaml", *config], ["trainer.progress=false", *sets])
    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d, quiet=True)
        tr.start_collection()
        while tr.step < cfg.trainer.prefill or not tr.replay.ready():
            tr.collect_step()
        for _ in range(3):                                   # warm-up: allocator, lazy inits
            tr.train_step()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(updates):
            tr.train_step()
        upd_cpu = (time.process_time() - cpu0) / updates
        upd_wall = (time.perf_counter() - wall0) / updates
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(act):
            tr.collect_step()
        act_cpu = (time.process_time() - cpu0) / act
        act_wall = (time.perf_counter() - wall0) / act
    return {"update_ms_cpu": round(1e3 * upd_cpu, 2), "update_ms_wall": round(1e3 * upd_wall, 2),
            "act_ms_cpu": round(1e3 * act_cpu, 3), "act_ms_wall": round(1e3 * act_wall, 3),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "code": os.path.abspath(code)}


def run_child(code: str, a, sets: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--code", code, "--updates", str(a.updates),
           "--act", str(a.act), "--json"]
    for c in a.config:
        cmd += ["--config", c]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=code).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", default=[], help="config overlay(s) after default.yaml")
    p.add_argument("--set", action="append", default=[], help="key=value overrides")
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--act", type=int, default=200, help="policy steps timed after the updates")
    p.add_argument("--new-set", action="append", default=[],
                   help="with --compare: overrides for this checkout only (keys the other one lacks)")
    p.add_argument("--code", default=os.path.join(HERE, ".."), help="checkout whose agents/ and quatrix_world/ run")
    p.add_argument("--compare", metavar="OLD", help="another checkout: measure it and this one, interleaved")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds with --compare")
    p.add_argument("--out", help="write the result JSON here")
    p.add_argument("--json", action="store_true", help="print one JSON line only")
    a = p.parse_args()
    if a.compare:
        new = os.path.abspath(os.path.join(HERE, ".."))
        runs = {"old": [], "new": []}
        for _ in range(a.rounds):
            runs["old"].append(run_child(os.path.abspath(a.compare), a, a.set))
            runs["new"].append(run_child(new, a, a.set + a.new_set))
        med = {w: {k: statistics.median(r[k] for r in rs) for k in ("update_ms_cpu", "update_ms_wall",
                                                                       "act_ms_cpu", "act_ms_wall")}
               for w, rs in runs.items()}
        result = {"config": ["default.yaml", *a.config], "set": a.set, "new_set": a.new_set, "updates": a.updates, "act": a.act,
                  "rounds": a.rounds, "median": med,
                  "speedup_update_cpu": round(med["old"]["update_ms_cpu"] / med["new"]["update_ms_cpu"], 2),
                  "speedup_act_cpu": round(med["old"]["act_ms_cpu"] / med["new"]["act_ms_cpu"], 2),
                  "runs": runs}
    else:
        result = measure(a.code, a.config, a.set, a.updates, a.act)
    text = json.dumps(result, indent=None if a.json else 1)
    print(text, flush=True)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        from quatrix_world.files import write_json
        write_json(result, a.out)


if __name__ == "__main__":
    main()
