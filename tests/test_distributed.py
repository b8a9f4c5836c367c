"""Data parallel on CPU: 2 ranks with gloo via torch.distributed.run (torchrun), through the real CLI."""
import csv
import os
import socket
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["-m", "agents.cli", "train", "--config", "configs/debug.yaml", "--run-dir", "RUN", "--quiet",
        "--set", "trainer.total_steps=200", "--set", "trainer.eval_every=200"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env() -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=REPO)
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "QUATRIX_DEBUG"):
        env.pop(k, None)
    return env


def tree(root) -> set:
    """Relative paths under root (files and directories), event files' unique suffix removed."""
    out = set()
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(d, name), root)
            out.add("events.out.tfevents.*" if name.startswith("events.out.tfevents.") else rel)
    return out


@pytest.fixture(scope="module")
def single_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("single")
    r = subprocess.run([sys.executable, *ARGS], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return cwd


def test_two_ranks_gloo_identical_weights_rank0_writes(tmp_path, single_run):
    cwd = tmp_path / "ddp"
    cwd.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), *ARGS]
    r = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    assert "Traceback" not in r.stderr, r.stderr[-4000:]

    # weights stayed identical: printed by rank 0 and logged to metrics.csv
    assert r.stdout.count("data parallel: 2 ranks, max weight difference across ranks 0\n") == 1, r.stdout
    assert r.stdout.count("done: 200 env steps") == 1, r.stdout     # one summary (rank 0's)
    with open(cwd / "RUN" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["name"] == "dist/max_param_diff"]
    assert len(rows) == 1 and float(rows[0]["value"]) == 0.0, rows

    # rank 0 alone wrote files: exactly the files of a single-process run, nothing else anywhere in the cwd
    assert os.listdir(cwd) == ["RUN"]
    assert tree(cwd / "RUN") == tree(single_run / "RUN")
    assert len([f for f in os.listdir(cwd / "RUN") if f.startswith("events.out.tfevents.")]) == 1
    assert not [f for f in tree(cwd / "RUN") if ".tmp" in f]
    # one writer: every metrics row is unique (two writers would duplicate the eval rows)
    lines = (cwd / "RUN" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,seconds,name,value" and lines.count(lines[0]) == 1
    assert len([line for line in lines if ",eval/return," in line]) == 1
