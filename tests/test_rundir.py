"""Run-folder ownership: an existing run is never silently replaced, and one process trains per folder."""
import os
import signal
import subprocess
import sys

import pytest

from agents import rundir
from agents.rundir import RunDirError, claim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_run(d):
    os.makedirs(d / "checkpoints", exist_ok=True)
    (d / "config.yaml").write_text("seed: 0\n")
    (d / "metrics.csv").write_text("step,seconds,name,value\n")
    (d / "checkpoints" / "latest.pt").write_bytes(b"x")
    (d / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    (d / "notes.txt").write_text("mine")                       # not a run file: never removed


def test_existing_run_refused_unless_resume_or_force(tmp_path):
    d = tmp_path / "run"
    fake_run(d)
    with pytest.raises(RunDirError, match=r"already holds a run — continue it with --resume .*, replace it with --force, or train into another "
                       r"folder \(--run-dir DIR\)"):
        claim(str(d))
    assert (d / "checkpoints" / "latest.pt").exists()          # nothing touched
    claim(str(d), resume=True).release()
    assert (d / "metrics.csv").exists()
    claim(str(d), force=True).release()
    assert sorted(os.listdir(d)) == [".lock", "notes.txt"]
    with pytest.raises(RunDirError, match="pass one of them"):
        claim(str(d), resume=True, force=True)


def test_second_process_on_the_same_run_is_refused(tmp_path):
    d = tmp_path / "run"
    held = claim(str(d))
    with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
        claim(str(d), resume=True)
    held.release()
    claim(str(d), resume=True).release()                       # free again once released


def test_lock_dies_with_its_process(tmp_path):
    """A killed owner leaves no stale lock: the kernel drops flock locks with the process."""
    d = tmp_path / "run"
    code = (f"import sys, time; sys.path.insert(0, {REPO!r}); from agents.rundir import claim; "
            f"l = claim({str(d)!r}); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by process {p.pid}"):
            claim(str(d))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    claim(str(d)).release()


def test_temp_files_of_killed_writes_are_removed(tmp_path):
    d = tmp_path / "run"
    fake_run(d)
    (d / "checkpoints" / ".tmp-abc123.pt").write_bytes(b"partial")
    (d / "metrics.csv.tmp").write_text("partial")
    claim(str(d), resume=True).release()
    assert not (d / "checkpoints" / ".tmp-abc123.pt").exists() and not (d / "metrics.csv.tmp").exists()
    assert (d / "checkpoints" / "latest.pt").exists()


def cli(*args):
    env = dict(os.environ)
    env.pop("QUATRIX_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=300)


def test_cli_train_twice_refuses_then_force_replaces(tmp_path):
    run = tmp_path / "debug"
    small = ["--config", "configs/debug.yaml", "--run-dir", str(run), "--quiet", "--set", "trainer.total_steps=120",
             "--set", "trainer.eval_every=120", "--set", "trainer.checkpoint_every=120"]
    r = cli("train", *small)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (run / "metrics.csv").read_text()
    r = cli("train", *small)
    assert r.returncode == 2 and "already holds a run" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert (run / "metrics.csv").read_text() == rows           # the first run is intact
    r = cli("train", *small, "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # the old events went with the old run
    assert rundir.holds_run(str(run))
