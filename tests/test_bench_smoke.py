"""bench/imagination.py runs end to end (tiny sizes) and writes its headline fields. No timing thresholds."""
import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_imagination_bench_tiny(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "imagination.py"), "--quick", "--tiny",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(out.read_text())
    for k in ("speedup_h64", "step_time_ratio_64_vs_1", "train_flops_fraction"):
        assert isinstance(r[k], (int, float)) and math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    assert {(row["horizon"], row["cache"]) for row in r["table"]} == {(16, True), (16, False), (64, True), (64, False)}
    assert all(row["steps_per_s"] > 0 for row in r["table"])
    assert len(r["step_times_ms"]) == 64
    cb = r["cache_bytes_per_token"]
    for name in ("qcompass", "qcompass_compressed", "mha"):       # measured cache bytes match the formula
        assert cb[name]["bytes_per_token_all_layers"] == cb[name]["formula_all_layers"]
    assert cb["qcompass_compressed"]["bytes_per_token_all_layers"] < cb["qcompass"]["bytes_per_token_all_layers"] \
        < cb["mha"]["bytes_per_token_all_layers"]
    assert r["threads"] == 1 and r["torch"] and r["date"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]     # atomic write: no temp file left
