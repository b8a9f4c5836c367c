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
    r = cli("eval", "--help")
    assert r.returncode == 0 and "(default: 10)" in r.stdout and "(default: both)" in r.stdout
    # --help stays fast: the CLI module imports no torch, gymnasium or torchrl until a command runs
    code = "import sys, agents.cli; print(sorted({'torch', 'gymnasium', 'torchrl'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
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


def readable_by_all(path) -> bool:
    """Written like every other output: 0o666 less the umask (0644 under the usual 022), not mkstemp's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return path.stat().st_mode & 0o777 == 0o666 & ~umask


def _text_pixels(region) -> int:
    """Light pixels in a caption region (captions are light grey text on black)."""
    return int((region.min(axis=-1) > 150).sum())


def test_eval_imagine_record(debug_run, tmp_path):
    import imageio.v3 as iio
    r = cli("eval", "--checkpoint", str(debug_run), "--episodes", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((debug_run / "eval.json").read_text())
    for mode in ("sampled", "deterministic"):             # both, each named
        assert result[mode]["episodes"] == 2 and len(result[mode]["returns"]) == 2
        assert result[mode]["deterministic"] == (mode == "deterministic")
    assert "sampled actions (the policy as trained): return" in r.stdout
    assert "the most likely action: return" in r.stdout
    out = tmp_path / "imagined.gif"
    qmap = tmp_path / "qmap.png"
    r = cli("imagine", "--checkpoint", str(debug_run), "--horizon", "8", "--group", "2", "--out", str(out),
            "--qmap", str(qmap))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "imagined 2 x 8 steps after 4 real ones (stopped at --horizon" in r.stdout
    video = iio.imread(out)
    assert video.shape[0] == 4 + 8                        # the real context, then each imagined step
    cap, scale = 18, 4
    first_branch, second_branch = cap * 2, cap * 2 + 56 * scale + 1
    for frame in (video[0], video[-1]):
        assert _text_pixels(frame[:cap]) > 30             # the title: real step / imagined step
        for top in (first_branch, second_branch):         # each branch row is named on its left
            assert _text_pixels(frame[top:top + cap, :60]) > 20
    assert _text_pixels(video[-1][cap:2 * cap]) > 30      # the last frame says why imagination ends
    assert _text_pixels(video[0][cap:2 * cap]) == 0       # ...and the first does not
    assert readable_by_all(out)
    assert qmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = tmp_path / "imagined.png"
    r = cli("imagine", "--checkpoint", str(debug_run), "--group", "3", "--out", str(picture))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopped at the trained horizon: the model trained on 16-step windows" in r.stdout
    grid = iio.imread(picture)
    assert grid.shape[0] > 3 * 56 * 2 and grid.shape[1] > 16 * 56 * 1    # 3 rows x (4 real + 12 imagined)
    assert readable_by_all(picture)
    out2 = tmp_path / "side.gif"
    r = cli("record", "--checkpoint", str(debug_run / "checkpoints" / "latest.pt"), "--episodes", "1",
            "--out", str(out2), "--side-by-side")
    assert r.returncode == 0, r.stderr[-2000:]
    side = iio.imread(out2)
    assert side.shape[0] <= 16 - 3                        # open loop stops at the trained window
    assert _text_pixels(side[0][:cap, :scale * 56]) > 10 and _text_pixels(side[0][:cap, -scale * 56:]) > 10
    assert readable_by_all(out2)
    assert not (debug_run / "videos").exists()


def test_dry_run_prints_config_and_params(tmp_path):
    r = cli("train", "--config", "configs/debug.yaml", "--dry-run", "--run-dir", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "parameters: world model" in r.stdout and "observation image: image" in r.stdout
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
    # vector observations: imagine writes a plot of each dimension and the reward, not a video
    r = cli("imagine", "--checkpoint", str(run), "--out", str(tmp_path / "imagined.mp4"))
    assert r.returncode == 2 and "--out imagined.png" in r.stderr, r.stderr[-2000:]
    plot = tmp_path / "imagined.png"
    r = cli("imagine", "--checkpoint", str(run), "--group", "2", "--horizon", "6", "--out", str(plot))
    assert r.returncode == 0, r.stderr[-2000:]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "the real env replayed the same actions" in r.stdout


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
