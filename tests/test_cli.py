"""Smoke tests: the real `quatrix-world` CLI in a subprocess on configs/debug.yaml."""
import json
import os
import subprocess
import sys

import pytest

ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "debug"
    r = cli("train", "--config", "configs/debug.yaml", "--run-dir", str(run), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_help_and_version():
    r = cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "env-check" in r.stdout
    r = cli("--version")
    assert r.returncode == 0 and "quatrix-world 0.1.0" in r.stdout


def test_train_writes_run_files(debug_run):
    for name in ("config.yaml", "metrics.csv", "curves.png", "checkpoints/latest.pt", "checkpoints/best.pt"):
        assert (debug_run / name).is_file(), name
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(debug_run))
    rows = (debug_run / "metrics.csv").read_text().splitlines()
    names = {r.split(",")[2] for r in rows[1:]}
    assert {"loss/world", "loss/actor", "loss/critic", "eval/return", "train/episode_return"} <= names
    assert not [f for f in os.listdir(debug_run / "checkpoints") if f.startswith(".tmp")]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(debug_run))
    events.Reload()
    assert {"eval/real_episode", "eval/imagined_rollout"} <= set(events.Tags()["images"])   # animated GIFs


def test_eval_imagine_record(debug_run, tmp_path):
    r = cli("eval", "--checkpoint", str(debug_run), "--episodes", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((debug_run / "eval.json").read_text())
    assert result["episodes"] == 2 and len(result["returns"]) == 2
    out = tmp_path / "imagined.mp4"
    qmap = tmp_path / "qmap.png"
    r = cli("imagine", "--checkpoint", str(debug_run), "--horizon", "8", "--group", "2", "--out", str(out),
            "--qmap", str(qmap))
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 0
    assert qmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out2 = tmp_path / "side.gif"
    r = cli("record", "--checkpoint", str(debug_run / "checkpoints" / "latest.pt"), "--episodes", "1",
            "--out", str(out2), "--side-by-side")
    assert r.returncode == 0, r.stderr[-2000:]
    assert out2.stat().st_size > 0


def test_dry_run_prints_config_and_params(tmp_path):
    r = cli("train", "--config", "configs/debug.yaml", "--dry-run", "--run-dir", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "parameters: world model" in r.stdout and "observation pixels: image" in r.stdout
    assert not (tmp_path / "x").exists()


def test_user_error_is_one_line_exit_2(tmp_path):
    r = cli("train", "--config", "configs/debug.yaml", "--set", "trainer.batchsize=3")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: unknown key 'trainer.batchsize' — did you mean 'trainer.batch_size'?"
    r = cli("eval", "--checkpoint", str(tmp_path / "nope"))
    assert r.returncode == 2 and "checkpoint not found" in r.stderr and "Traceback" not in r.stderr


def test_continuous_actions_train_and_record(tmp_path):
    """Pendulum (Box actions, vector obs, frames from env.render()) through train and record."""
    run = tmp_path / "pend"
    r = cli("train", "--config", "configs/debug.yaml", "--config", "configs/pendulum.yaml", "--run-dir", str(run),
            "--quiet", "--set", "trainer.total_steps=250", "--set", "trainer.eval_every=250")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "error" not in r.stderr.lower()
    out = tmp_path / "pend.gif"
    r = cli("record", "--checkpoint", str(run), "--episodes", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 0


def test_a_bug_is_a_traceback_not_a_user_error(monkeypatch, capsys):
    """User errors are one `error:` line (exit 2); anything else keeps its traceback (exit 1)."""
    from agents import cli as cli_module
    from envs import EnvError

    def broken(args):
        raise KeyError("internal")
    monkeypatch.setattr(cli_module, "cmd_env_check", broken)
    monkeypatch.delenv("QUATRIX_DEBUG", raising=False)
    assert cli_module.main(["env-check", "CartPole-v1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'internal'" in err and "please report it" in err

    def user_mistake(args):
        raise EnvError("unknown env id 'Nope-v0' — use a registered gymnasium id")
    monkeypatch.setattr(cli_module, "cmd_env_check", user_mistake)
    assert cli_module.main(["env-check", "Nope-v0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown env id 'Nope-v0' — use a registered gymnasium id"

    def disk_full(args):
        raise OSError(28, "No space left on device", "/tmp/x.pt")
    monkeypatch.setattr(cli_module, "cmd_env_check", disk_full)
    assert cli_module.main(["env-check", "CartPole-v1"]) == 2
    assert "No space left on device" in capsys.readouterr().err
