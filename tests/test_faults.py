"""Faults and determinism through the real CLI: kill -9 + resume, exact resume, Ctrl-C, same seed."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from quatrix_world.checkpoint import load_checkpoint

ENV = dict(os.environ, PYTHONWARNINGS="ignore")
BASE = ["-m", "agents.cli", "train", "--config", "configs/debug.yaml", "--quiet"]


def train(*extra, timeout=600):
    r = subprocess.run([sys.executable, *BASE, *extra], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def rows(run):
    with open(os.path.join(run, "metrics.csv")) as f:
        return list(csv.reader(f))[1:]


def losses(run):
    return [(r[0], r[2], r[3]) for r in rows(run) if r[2].startswith("loss/")]


def test_same_seed_same_losses(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train("--run-dir", a, "--set", "trainer.total_steps=200", "--set", "trainer.log_every=10")
    train("--run-dir", b, "--set", "trainer.total_steps=200", "--set", "trainer.log_every=10")
    la, lb = losses(a)[:50], losses(b)[:50]
    assert len(la) >= 50
    assert la == lb


def test_resume_equals_straight_run(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    train("--run-dir", straight)
    train("--run-dir", split, "--set", "trainer.total_steps=150")
    train("--resume", split, "--set", "trainer.total_steps=300")
    drop_time = lambda rs: [(r[0], r[2], r[3]) for r in rs if not r[2].startswith("eval/")]
    assert drop_time(rows(straight)) == drop_time(rows(split))
    a = load_checkpoint(os.path.join(straight, "checkpoints", "latest.pt"))
    b = load_checkpoint(os.path.join(split, "checkpoints", "latest.pt"))
    assert a["counters"]["step"] == b["counters"]["step"] == 300
    assert a["counters"]["updates"] == b["counters"]["updates"]
    for k in a["world"]:
        assert torch.equal(a["world"][k], b["world"][k]), k


def _wait_for_checkpoint(path, proc, min_step, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        if os.path.exists(path):
            try:
                if load_checkpoint(path)["counters"]["step"] >= min_step:
                    return
            except Exception:
                pass
        time.sleep(0.5)
    raise AssertionError("no checkpoint in time")


def _wait_for_file(path, proc, timeout=300):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() - t0 < timeout, f"no {path} in time"
        time.sleep(0.5)


def test_kill9_then_resume(tmp_path):
    run = str(tmp_path / "run")
    latest = os.path.join(run, "checkpoints", "latest.pt")
    p = subprocess.Popen([sys.executable, *BASE, "--run-dir", run, "--set", "trainer.total_steps=100000",
                          "--set", "trainer.eval_every=100000"], env=ENV, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_checkpoint(latest, p, 200)
    time.sleep(1.0)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    killed_at = load_checkpoint(latest)["counters"]
    train("--resume", run, "--set", "trainer.total_steps=" + str(killed_at["step"] + 100))
    after = load_checkpoint(latest)["counters"]
    assert after["step"] == killed_at["step"] + 100
    # the replay ratio continues from its bookkeeping: no burst of catch-up updates
    assert after["updates"] - killed_at["updates"] == 10
    seen = [(r[0], r[2]) for r in rows(run)]
    assert len(seen) == len(set(seen)), "metrics.csv has duplicated rows after resume"
    upd = sorted(float(r[3]) for r in rows(run) if r[2] == "train/updates")
    assert upd == sorted(set(upd))


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_writes_final_checkpoint(tmp_path, sig, code):
    run = str(tmp_path / "run")
    latest = os.path.join(run, "checkpoints", "latest.pt")
    p = subprocess.Popen([sys.executable, *BASE, "--run-dir", run, "--set", "trainer.total_steps=100000",
                          "--set", "trainer.eval_every=100000", "--set", "trainer.checkpoint_every=100"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(latest, p, 100)
        _wait_for_file(os.path.join(run, "curves.png"), p)   # drawn from the first logged rows, before any evaluation
        time.sleep(1.0)
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:                                 # a failed check: never leave the run behind
            p.kill()
            p.wait()
    assert p.returncode == code, err[-2000:]               # stopped from outside: not a success, not an error
    step = load_checkpoint(latest)["counters"]["step"]
    assert step >= 100
    lines = out.strip().splitlines()
    assert lines == [f"interrupted by {sig.name} at step {step} of 100000: checkpoint written to "
                     f"{run}/checkpoints/latest.pt (continue with --resume {run})"], out


def test_nonfinite_loss_is_skipped_then_stops(tmp_path):
    from agents.trainer import Trainer, TrainingError
    from quatrix_world.config import load_config
    cfg = load_config(["default.yaml", "debug.yaml"], ["trainer.max_nonfinite_skips=3", "trainer.progress=false",
                                                       "trainer.checkpoint_every=100"])
    tr = Trainer(cfg, str(tmp_path / "run"), quiet=True)
    real_loss = tr.world.loss
    calls = {"n": 0}

    def poisoned(batch):
        total, metrics, aux = real_loss(batch)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] > 2 else total), metrics, aux
    tr.world.loss = poisoned
    before = {k: v.clone() for k, v in tr.world.state_dict().items()}
    with pytest.warns(UserWarning, match="non-finite world model loss — update skipped"):
        with pytest.raises(TrainingError, match="non-finite for 3 updates in a row"):
            tr.train()
    assert all(torch.isfinite(v).all() for v in tr.world.state_dict().values() if v.is_floating_point())
    changed = any(not torch.equal(before[k], v) for k, v in tr.world.state_dict().items())
    assert changed                                   # the two good updates were applied
    assert os.path.exists(os.path.join(tmp_path, "run", "checkpoints", "latest.pt"))   # last good checkpoint


def test_parallel_env_lanes_train_and_resume(tmp_path):
    """trainer.num_envs=2 with torchrl's ParallelEnv: trains, checkpoints, resumes with counters going on."""
    run = str(tmp_path / "lanes")
    lanes = ["--set", "trainer.num_envs=2", "--set", "trainer.parallel_envs=true"]
    train("--run-dir", run, *lanes, "--set", "trainer.total_steps=300")
    ck = load_checkpoint(os.path.join(run, "checkpoints", "latest.pt"))
    assert ck["counters"]["step"] == 300 and ck["replay"]["num_lanes"] == 2
    assert [lane["len"] for lane in ck["replay"]["lanes"]] == [150, 150]     # each lane its own stream
    names = [r[2] for r in rows(run)]
    assert names.count("train/episode_return") == 2       # each lane ends its 144-step episode once
    train("--resume", run, "--set", "trainer.total_steps=400")
    ck = load_checkpoint(os.path.join(run, "checkpoints", "latest.pt"))
    assert ck["counters"]["step"] == 400 and ck["counters"]["updates"] == int((400 - 100 + 1) * 0.1)
    evals = [int(r[0]) for r in rows(run) if r[2] == "eval/return"]
    assert evals == [150, 300, 400]                       # every 150 steps, and at the end of each run
    steps = [int(r[0]) for r in rows(run)]
    assert steps == sorted(steps)                         # no duplicated or reordered rows


def test_torn_metrics_line_is_dropped_on_resume(tmp_path):
    """A kill mid-append leaves a line without its newline: resume drops it instead of merging rows."""
    from agents.logger import RunLogger
    log = RunLogger(str(tmp_path))
    log.scalars({"loss/world": 1.5, "eval/return": 0.25}, step=10, seconds=1.0)
    log.scalars({"loss/world": 1.0}, step=30, seconds=2.0)
    log.close()
    with open(log.metrics_path, "a") as f:
        f.write("40,3.00,loss/wor")                                 # torn
    log.truncate(step=20)
    rows = list(csv.reader(open(log.metrics_path)))
    assert rows == [["step", "seconds", "name", "value"], ["10", "1.00", "loss/world", "1.5"],
                    ["10", "1.00", "eval/return", "0.25"]]
    log.scalars({"loss/world": 0.5}, step=21, seconds=2.5)
    assert list(csv.reader(open(log.metrics_path)))[-1] == ["21", "2.50", "loss/world", "0.5"]
    with open(log.metrics_path, "ab") as f:
        f.write(b"\xff\xfe broken\n")
    from quatrix_world.errors import QuatrixError
    with pytest.raises(QuatrixError, match="metrics.csv is not UTF-8 text"):
        log.truncate(step=30)


def test_an_env_that_never_ends_cannot_hang_evaluation():
    from agents.evaluate import Evaluator
    from quatrix_world.config import load_config
    from quatrix_world.world import QuatrixWorld
    from agents import build_agent
    cfg = load_config(["default.yaml", "debug.yaml"], ["env.id=test_envs_helpers:NeverEnds",
                                                       "trainer.eval_max_steps=37", "trainer.eval_episodes=3"])
    ev = Evaluator(cfg)
    assert ev.step_cap() == 37                                  # no time limit of its own
    env = ev.envs_for(1)[0]
    from agents.collect import env_specs
    obs, act = env_specs(env)
    world = QuatrixWorld(cfg.world, obs, act)
    agent = build_agent(cfg.agent, world.feat_dim, world.act_desc)
    row, first, _ = ev(world, agent, step=0)
    assert row["eval/return_sampled"] == 0.0 and len(first["actions"]) == 37
    asked = []
    ev.stop = lambda: len(asked) > 5 or asked.append(1)       # a stop request after a few steps
    rng = torch.get_rng_state()
    with pytest.raises(KeyboardInterrupt):
        ev(world, agent, step=1)
    assert torch.equal(torch.get_rng_state(), rng) and world.training   # left as it was


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MB tmpfs (needs root; CI runs as root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_a_real_full_disk_is_one_clear_error(small_tmpfs):
    """The first checkpoint (replay included) does not fit: `error: No space left on device`, exit 2,
    no temp file left behind."""
    run = small_tmpfs / "run"
    r = subprocess.run([sys.executable, *BASE, "--run-dir", str(run), "--set", "trainer.total_steps=200",
                        "--set", "trainer.checkpoint_every=100", "--set", "trainer.eval_every=1000"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: No space left on device"), r.stderr
    assert "latest.pt" in lines[0]
    assert not [f for f in os.listdir(run / "checkpoints") if f.startswith(".tmp-")]


def test_diverging_weights_end_as_a_training_error_keeping_a_good_checkpoint(tmp_path):
    run = tmp_path / "div"
    # lr 1e6: the weights blow up after an update or two; 60 updates leave room for 20 failures in a row
    r = subprocess.run([sys.executable, *BASE, "--run-dir", str(run), "--set", "trainer.world_lr=1e6",
                        "--set", "agent.lr=1e6", "--set", "trainer.checkpoint_every=20",
                        "--set", "trainer.total_steps=700"],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the ") and "non-finite for 20 updates in a row" in last, last
    ck = load_checkpoint(str(run / "checkpoints" / "latest.pt"))
    for part in ("world", "agent"):
        assert all(torch.isfinite(v).all() for v in ck[part].values() if v.is_floating_point())
