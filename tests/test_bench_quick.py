"""The benchmarks' --quick modes run end to end and write sane result files (no timing asserts)."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def bench_module(name: str):
    """bench/<name>.py loaded as a module, with sys.path left as it was (bench/envs.py must not shadow
    envs/ for later tests)."""
    import importlib.util
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location(name, os.path.join("bench", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path[:] = saved
    return module


def run(*args, ok=True):
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=900)
    assert (r.returncode == 0) == ok, r.stderr[-3000:]
    return r


def test_vs_ppo_quick(tmp_path):
    run("bench/vs_ppo.py", "--quick", "--results", str(tmp_path))
    res = json.loads((tmp_path / "vs_ppo_quick.json").read_text())["envs"]["CartPole-v1"]
    assert set(res) == {"ppo", "actor_critic", "grpo"}
    for method, r in res.items():
        assert r["seeds"] == [0] and 0 <= r["solved_seeds"] <= 1
        assert r["budget"] == 1200 and r["threshold"] == 475.0
        assert math.isfinite(r["final_return_mean"]) and r["final_return_mean"] > 0
        rows = (tmp_path / "runs_quick" / method / "CartPole-v1" / "0.csv").read_text().splitlines()
        assert rows[0] == "step,seconds,score"
        steps = [int(line.split(",")[0]) for line in rows[1:]]
        assert steps and steps == sorted(steps) and steps[-1] <= 1200      # the budget is respected
        assert float(rows[-1].split(",")[2]) == r["final_return_mean"]     # JSON recomputed from the CSV
    assert (tmp_path / "vs_ppo_cartpole_quick.png").stat().st_size > 0
    # --reuse: the JSON is rebuilt from the CSVs without rerunning anything
    r2 = run("bench/vs_ppo.py", "--quick", "--reuse", "--results", str(tmp_path))
    assert "reusing" in r2.stdout
    assert json.loads((tmp_path / "vs_ppo_quick.json").read_text())["envs"]["CartPole-v1"] == res


def test_ablation_and_learning_quick(tmp_path):
    out = tmp_path / "ablation.json"
    run("bench/ablation.py", "--quick", "--out", str(out), "--mixers", "qcompass", "mha")
    res = json.loads((tmp_path / "ablation_quick.json").read_text())["debug"]
    assert res["qcompass"]["0"]["core_params"] < res["mha"]["0"]["core_params"]
    assert res["qcompass"]["0"]["cache_bytes_per_token"] < res["mha"]["0"]["cache_bytes_per_token"]
    assert res["mha"]["0"]["world_loss"], "world-model losses were logged"
    out = tmp_path / "learning.json"
    run("bench/learning.py", "--quick", "--out", str(out), "--runs", str(tmp_path / "runs"))
    r = json.loads(out.read_text())["debug"]["actor_critic"]["0"]
    assert r["history"] and r["total_steps"] == r["steps_run"] == 300 and r["interrupted"] is False


def test_collect_quick(tmp_path):
    out = tmp_path / "collect.json"
    run("bench/collect.py", "--quick", "--out", str(out))
    res = json.loads((tmp_path / "collect_quick.json").read_text())
    assert [r["num_envs"] for r in res["rows"]] == [1, 2, 2]
    assert [r["parallel_envs"] for r in res["rows"]] == [False, False, True]
    for r in res["rows"]:
        assert r["collect_steps_per_s_policy"] > 0 and 0 < r["train_steps_per_s_implied"] < r["collect_steps_per_s_policy"]
    assert res["update_seconds"] > 0


def test_censored_median_and_iqr():
    """Unsolved seeds count as beyond the budget: a statistic that lands on (or between) them is None."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    from vs_ppo import _median_iqr
    assert _median_iqr([5000, 6000, 8000, 6000, 5000]) == (6000.0, [5000.0, 6000.0])
    assert _median_iqr([5000, 6000, None, None, 7000]) == (7000.0, [6000.0, None])
    assert _median_iqr([28000, None]) == (None, [None, None])       # no value between solved and unsolved
    assert _median_iqr([None, None]) == (None, [None, None])
    # a quantile that lands exactly on a solved seed next to an unsolved one is that seed's value
    assert _median_iqr([None, 28000, 22000, 16000, 29000]) == (28000.0, [22000.0, 29000.0])


def test_mixer_quick_with_decode(tmp_path):
    out = tmp_path / "mixer.json"
    run("bench/mixer.py", "--quick", "--decode", "--repeats", "1", "--out", str(out))
    res = json.loads(out.read_text())
    assert res["config"]["device"] == "cpu" and res["config"]["dtype"] == "float32"
    assert res["params_qcompass"] == 327_680 and res["params_mha"] == 1_048_576
    assert {r["L"] for r in res["table"]} == {64, 256}
    assert all(r["fast_vs_reference_max_abs_err"] < 1e-4 for r in res["table"])
    dec = {(r["S"], r["variant"]): r for r in res["decode"]}
    assert {S for S, _ in dec} == {256, 1024}
    for S in (256, 1024):      # the measured cache (KVCache.nbytes) matches the per-token formula
        mha = dec[(S, "mha")]["cache_mib"]
        assert dec[(S, "qcompass")]["cache_mib"] / mha == res["cache_bytes_ratio_plain"] == 0.5625
        assert dec[(S, "qcompass_compressed")]["cache_mib"] / mha == res["cache_bytes_ratio_compressed"] == 0.125
        assert all(dec[(S, v)]["median_ms"] > 0 for v in ("qcompass", "qcompass_compressed", "mha"))


def test_mixer_bad_arguments_name_the_fix(tmp_path):
    r = run("bench/mixer.py", "--quick", "--lengths", "64", "--out", str(tmp_path / "x.json"), ok=False)
    assert "must include 256" in r.stderr
    if not torch.cuda.is_available():
        r = run("bench/mixer.py", "--quick", "--device", "cuda", "--out", str(tmp_path / "x.json"), ok=False)
        assert "no CUDA device" in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_suites_bench_ppo_on_minatar_channels(tmp_path):
    """PPO gets MinAtar's preprocessed channels as float [C, 10, 10] and MinAtar's small network;
    runs are merged into one file and skipped when present."""
    suites = bench_module("suites")
    env = suites.ppo_env("MinAtar/Breakout-v1")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (4, 10, 10) and obs.dtype == "float32" and set(obs.ravel()) <= {0.0, 1.0} and obs.sum() > 0
    out = tmp_path / "s.json"
    args = ["bench/suites.py", "--env", "MinAtar/Breakout-v1", "--methods", "ppo", "--budget", "2000",
            "--eval-every", "1000", "--episodes", "2", "--out", str(out)]
    run(*args, "--seeds", "0", "1")
    runs = json.loads(out.read_text())["runs"]["MinAtar/Breakout-v1"]["ppo"]
    assert set(runs) == {"0", "1"}
    for h in runs.values():
        assert [row[0] for row in h] == [1000, 2000] and all(math.isfinite(row[2]) for row in h)
    assert "ppo seed" not in run(*args, "--seeds", "1").stdout           # present: skipped
    table = run("bench/suites.py", "--report", str(out), "--plot", str(tmp_path / "c.png")).stdout
    assert "| MinAtar/Breakout-v1 | ppo | 2 | 2,000 |" in table and (tmp_path / "c.png").stat().st_size > 0


def test_suites_bench_gives_ppo_a_crafter_score(tmp_path):
    """On Crafter each evaluation row carries the Crafter score of its episodes beside the return."""
    out = tmp_path / "c.json"
    run("bench/suites.py", "--env", "crafter", "--methods", "ppo", "--budget", "1000", "--eval-every", "1000",
        "--episodes", "2", "--out", str(out))
    (row,) = json.loads(out.read_text())["runs"]["crafter"]["ppo"]["0"]
    step, seconds, ret, score = row
    assert step == 1000 and seconds >= 0 and math.isfinite(ret) and 0 <= score <= 100
    assert "Crafter score" in run("bench/suites.py", "--report", str(out)).stdout


def test_image_loss_bench_scores_each_channel(tmp_path):
    out = tmp_path / "image_loss.json"
    run("bench/image_loss.py", "--updates", "4", "--every", "2", "--steps", "300", "--frames", "32",
        "--out", str(out))
    res = json.loads(out.read_text())
    assert res["env"] == "MinAtar/Breakout-v1" and set(res["losses"]) == {"mse", "binary"}
    for rows in res["losses"].values():
        assert [r["update"] for r in rows] == [2, 4]
        for r in rows:
            assert len(r["channels"]) == 4                   # Breakout: paddle, ball, trail, brick
            assert r["channels"][3]["lit_per_frame"] > 10    # the bricks
            for c in r["channels"]:
                assert 0 <= c["recall"] <= 1 and 0 <= c["precision"] <= 1


def test_doorkey_rows_real_return_replays_from_the_seeded_layout():
    """The real-env replay behind `--imagine`: DoorKey-5x5 reset with seed 1 puts the agent at (1, 2) facing
    the key at (1, 3), the door at (2, 2): pick up, turn, toggle, through, down to the goal. Without the
    toggle the locked door blocks the way; another seed's layout does not fit these moves."""
    dr = bench_module("doorkey_rows")
    env, path = "MiniGrid-DoorKey-5x5-v0", [3, 0, 5, 2, 2, 1, 2]     # pickup, left, toggle, fwd, fwd, right, fwd
    assert dr.real_return(env, 1, path) == pytest.approx(1 - 0.9 * 7 / 250)
    assert dr.real_return(env, 1, path + [2, 2]) == pytest.approx(1 - 0.9 * 7 / 250)   # stops at the goal
    assert dr.real_return(env, 1, [3, 0, 2, 2, 1, 2]) == 0.0
    assert dr.real_return(env, 0, path) == 0.0


def test_doorkey_rows_counts_each_door_row(tmp_path):
    """bench/doorkey_rows.py on a tiny DoorKey-5x5 run: every episode lands in door row 1 or 2, imagined
    wins are counted per started branch; an Empty-6x6 run is refused with one line."""
    import agents
    dk = tmp_path / "dk"
    agents.train("debug.yaml", run_dir=str(dk), overrides=["env.id=MiniGrid-DoorKey-5x5-v0", "trainer.total_steps=120",
                                                           "trainer.eval_every=1000", "run.dir=" + str(tmp_path)])
    out = tmp_path / "rows.json"
    run("bench/doorkey_rows.py", str(dk), "--episodes", "4", "--imagine", "3", "--out", str(out))
    rows = json.loads(out.read_text())[str(dk)]
    assert set(rows) <= {"1", "2"} and sum(r["episodes"] for r in rows.values()) == 4
    assert all(0 <= r["solved"] <= r["episodes"] for r in rows.values())
    imagined = [r["imagined"] for r in rows.values() if "imagined" in r]
    assert sum(r["starts"] for r in imagined) >= 1          # an untrained policy does not finish in the context
    assert all(r["branches"] == 3 * r["starts"] and 0 <= r["real_wins"] <= r["imagined_wins"] <= r["branches"]
               for r in imagined)
    empty = tmp_path / "empty"
    agents.train("debug.yaml", run_dir=str(empty), overrides=["trainer.total_steps=120", "trainer.eval_every=1000"])
    r = run("bench/doorkey_rows.py", str(empty), "--episodes", "1", ok=False)
    assert "is a MiniGrid-Empty-6x6-v0 run" in r.stderr
