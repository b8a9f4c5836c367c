"""Bad inputs: every user mistake is one `error: …` line on stderr and exit 2 (CLI), or one specific
exception type with a message naming the problem and the fix (Python API) — never a traceback, and
never a half-written file."""
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONWARNINGS="ignore")
ENV.pop("QUATRIX_DEBUG", None)
DEBUG = ["--config", "configs/debug.yaml"]
SMALL_RUN = ["--quiet", "--set", "trainer.total_steps=120", "--set", "trainer.prefill=100",
             "--set", "trainer.eval_every=120"]

# Environments that break the contract in one way each (written to a module for `module:Name`).
BAD_ENVS = textwrap.dedent('''
    import gymnasium as gym
    import numpy as np

    class Base(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
        action_space = gym.spaces.Discrete(2)
        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return self._obs(), {}
        def _obs(self):
            return np.zeros(3, np.float32)
        def _reward(self):
            return 0.0
        def step(self, action):
            return self._obs(), self._reward(), False, False, {}

    class MultiDiscreteEnv(Base):
        action_space = gym.spaces.MultiDiscrete([2, 3])

    class TupleObsEnv(Base):
        observation_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3)))

    class WrongShapeEnv(Base):
        def _obs(self):
            return np.zeros(4, np.float32)

    class FloatImageEnv(Base):
        observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
        def _obs(self):
            return np.zeros((16, 16, 3), np.float32)

    class IntVectorEnv(Base):
        def _obs(self):
            return np.zeros(3, np.int64)

    class NanRewardEnv(Base):
        def _reward(self):
            return float("nan")
''')


def cli(*args, cwd=REPO, env=None):
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env or ENV, timeout=300)


def assert_user_error(r, *fragments):
    """Exit 2, exactly one stderr line `error: …` containing every fragment, no traceback."""
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def tmp_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.startswith((".tmp", ".tmp-"))
            or f.endswith(".tmp")]


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_envs")
    (d / "qw_bad_envs.py").write_text(BAD_ENVS)
    return d


@pytest.fixture(scope="module")
def bad_envs(env_dir):
    sys.path.insert(0, str(env_dir))
    try:
        yield importlib.import_module("qw_bad_envs")
    finally:
        sys.path.remove(str(env_dir))
        sys.modules.pop("qw_bad_envs", None)


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """One tiny real run per module; tests copy it before damaging anything."""
    run = tmp_path_factory.mktemp("runs") / "debug"
    r = cli("train", *DEBUG, "--run-dir", str(run), *SMALL_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "checkpoints" / "latest.pt").is_file()
    return run


@pytest.fixture
def run_copy(debug_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(debug_run, dst)
    return dst


# ============================================================================ CLI: config and env

CONFIG_CASES = {
    "unknown env id": (["--set", "env.id=CartPol-v1"], ["unknown env id 'CartPol-v1'", "did you mean 'CartPole-v1'"]),
    "module does not import": (["--set", "env.id=qw_no_such_module:Env"],
                               ["cannot import module 'qw_no_such_module'", "importable"]),
    "wrong type": (["--set", "trainer.batch_size=abc"], ["wrong type for 'trainer.batch_size'", "expected int"]),
    "unknown override key": (["--set", "trainer.batch_sise=3"],
                             ["unknown key 'trainer.batch_sise'", "did you mean 'trainer.batch_size'"]),
    "override without =": (["--set", "trainer"], ["override 'trainer' must look like key=value"]),
    "batch_size 0": (["--set", "trainer.batch_size=0"], ["trainer.batch_size must be > 0", "--set trainer.batch_size=1"]),
    "horizon 0": (["--set", "agent.horizon=0"], ["agent.horizon must be > 0", "--set agent.horizon=1"]),
    "group_size -1": (["--set", "agent.group_size=-1"], ["agent.group_size must be > 0, got -1", "--set agent.group_size=1"]),
    "replay_ratio 0": (["--set", "trainer.replay_ratio=0"], ["trainer.replay_ratio must be > 0", "replay_ratio=1"]),
    "patch larger than image": (["--set", "world.encoder.patch_size=64"],
                                ["image 56x56 does not tile into world.encoder.patch_size=64 patches", "choose a patch size"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_cli_config_errors(case, tmp_path):
    extra, fragments = CONFIG_CASES[case]
    out = tmp_path / "run"
    r = cli("train", *DEBUG, "--dry-run", "--run-dir", str(out), *extra)
    assert_user_error(r, *fragments)
    assert not out.exists()


def test_cli_config_file_missing(tmp_path):
    r = cli("train", "--config", str(tmp_path / "nope.yaml"), "--dry-run")
    assert_user_error(r, f"config file not found: '{tmp_path / 'nope.yaml'}'", "pass an existing YAML file", "debug.yaml")


def test_cli_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  batch_size: 4\n   seq_len: [1\n")
    r = cli("train", "--config", str(bad), "--dry-run")
    assert_user_error(r, str(bad), "line 3", "YAML syntax error", "fix the file")


def test_cli_unknown_key_in_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("trainer:\n  batch_sise: 4\n")
    r = cli("train", "--config", str(bad), "--dry-run")
    assert_user_error(r, "unknown key 'trainer.batch_sise'", "did you mean 'trainer.batch_size'")


def test_cli_yaml_python_tag_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "tag.yaml"
    bad.write_text(f'seed: !!python/object/apply:os.system ["touch {marker}"]\n')
    r = cli("train", "--config", str(bad), "--dry-run")
    assert_user_error(r, "refused YAML tag", "plain values only")
    assert not marker.exists()


ENV_CASES = {
    "MultiDiscrete action (env-check)": (["env-check", "qw_bad_envs:MultiDiscreteEnv"],
                                         ["action space MultiDiscrete", "not supported", "wrap the env"]),
    "MultiDiscrete action (train)": (["train", *DEBUG, "--dry-run", "--set", "env.id=qw_bad_envs:MultiDiscreteEnv"],
                                     ["action space MultiDiscrete", "wrap the env"]),
    "Tuple observation": (["env-check", "qw_bad_envs:TupleObsEnv"],
                          ["observation space Tuple is not supported", "supported: Box"]),
    "observation shape": (["env-check", "qw_bad_envs:WrongShapeEnv"],
                          ["does not match its space", "expected shape (3,)", "got shape (4,)", "fix the env"]),
    "image dtype": (["train", *DEBUG, "--run-dir", "dtype_run", "--quiet", "--set", "env.id=qw_bad_envs:FloatImageEnv"],
                    ["does not match its space", "expected dtype uint8", "got dtype float32", "astype(np.uint8)"]),
    "vector dtype": (["env-check", "qw_bad_envs:IntVectorEnv"],
                     ["does not match its space", "expected dtype float32", "got dtype int64", "astype(np.float32)"]),
    "NaN reward (env-check)": (["env-check", "qw_bad_envs:NanRewardEnv"],
                               ["non-finite reward nan", "clip_nonfinite_reward=True"]),
    "attribute typo": (["env-check", "qw_bad_envs:NanRewardEnvv"],
                       ["module 'qw_bad_envs' has no attribute 'NanRewardEnvv'", "did you mean 'NanRewardEnv'"]),
}


@pytest.mark.parametrize("case", list(ENV_CASES))
def test_cli_env_errors(case, env_dir):
    args, fragments = ENV_CASES[case]
    assert_user_error(cli(*args, cwd=env_dir), *fragments)
    assert not list(env_dir.glob("dtype_run/checkpoints/*"))


def test_cli_env_raising_during_training_checkpoints_at_the_crash(env_dir, tmp_path):
    """An env that raises in step: one line naming its error, a checkpoint at the last step boundary."""
    run = tmp_path / "nan_run"
    r = cli("train", *DEBUG, "--run-dir", str(run), "--quiet", "--set", "env.id=qw_bad_envs:NanRewardEnv", cwd=env_dir)
    assert_user_error(r, "the env raised EnvError at env step 0", "non-finite reward nan at step 0",
                      "clip_nonfinite_reward=True", "checkpoint at the last step written to", f"--resume {run}")
    assert (run / "checkpoints" / "latest.pt").is_file() and not tmp_files(run)


# ============================================================================ CLI: commands and paths

@pytest.mark.parametrize("flag", ["--horizon", "--group"])
def test_cli_imagine_non_positive(flag, debug_run, tmp_path):
    out = tmp_path / "x.mp4"
    r = cli("imagine", "--checkpoint", str(debug_run), flag, "0", "--out", str(out))
    assert_user_error(r, f"{flag} must be > 0, got 0", f"e.g. {flag} 1")
    assert not out.exists()


def test_cli_out_directory_missing(debug_run, tmp_path):
    out = tmp_path / "nodir" / "x.mp4"
    r = cli("imagine", "--checkpoint", str(debug_run), "--out", str(out))
    assert_user_error(r, f"output directory '{tmp_path / 'nodir'}' does not exist", "create it first")
    r = cli("eval", "--checkpoint", str(debug_run), "--episodes", "1", "--out", str(tmp_path / "nodir" / "e.json"))
    assert_user_error(r, "does not exist", "create it first")
    assert not (tmp_path / "nodir").exists()


def test_cli_checkpoint_missing(tmp_path):
    r = cli("eval", "--checkpoint", str(tmp_path / "nope.pt"))
    assert_user_error(r, "checkpoint not found", "pass a run directory or a .pt file")
    r = cli("eval", "--checkpoint", str(tmp_path))          # a directory without a run
    assert_user_error(r, "holds no checkpoint", "pass a run directory that has trained")


def test_cli_checkpoint_truncated(debug_run, tmp_path):
    data = (debug_run / "checkpoints" / "latest.pt").read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    r = cli("eval", "--checkpoint", str(bad), "--episodes", "1")
    assert_user_error(r, "is truncated or corrupt", "use an earlier checkpoint")
    assert not (tmp_path / "eval.json").exists()


def test_cli_checkpoint_empty_file(tmp_path):
    bad = tmp_path / "empty.pt"
    bad.write_bytes(b"")
    r = cli("eval", "--checkpoint", str(bad), "--episodes", "1")
    assert_user_error(r, "is truncated or corrupt")


def test_cli_resume_with_different_model_config(run_copy):
    latest = run_copy / "checkpoints" / "latest.pt"
    before = digest(latest)
    r = cli("train", "--resume", str(run_copy), "--quiet", "--set", "world.hidden_size=16")
    assert_user_error(r, "has a different model config", "'world.hidden_size' differs", "config it was trained with")
    assert digest(latest) == before and not tmp_files(run_copy)


def test_cli_checkpoint_for_a_different_observation_space(run_copy):
    from quatrix_world.checkpoint import content_digest
    latest = run_copy / "checkpoints" / "latest.pt"
    ck = torch.load(latest, weights_only=True)
    spec = json.loads(ck["spec"])
    spec["obs"]["image"]["shape"] = [64, 64, 3]
    ck["spec"] = json.dumps(spec, sort_keys=True)
    del ck["sha256"]
    ck["sha256"] = content_digest(ck)              # a well-formed checkpoint, made for another env
    torch.save(ck, latest)
    r = cli("eval", "--checkpoint", str(run_copy), "--episodes", "1")
    assert_user_error(r, "different observation/action space", "field 'obs.image.shape.0' differs",
                      "use the env it was trained on")
    assert not (run_copy / "eval.json").exists()
    spec["obs"]["pixels"] = spec["obs"].pop("image")   # as saved before Dict keys kept their names
    ck["spec"] = json.dumps(spec, sort_keys=True)
    del ck["sha256"]
    ck["sha256"] = content_digest(ck)
    torch.save(ck, latest)
    r = cli("eval", "--checkpoint", str(run_copy), "--episodes", "1")
    assert_user_error(r, "was made for observation keys ['mission', 'pixels'], this env has ['image', 'mission']",
                      "use the env it was trained on")


def test_cli_resume_without_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("train", "--resume", str(tmp_path / "empty"))
    assert_user_error(r, "is not a run directory with a checkpoint", "start a run with train --config")
    assert os.listdir(tmp_path / "empty") == []


DISK_FULL = textwrap.dedent('''
    import errno, sys, torch
    def full(obj, f, *a, **k):
        f.write(b"PK partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    torch.save = full
    from agents.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def test_cli_disk_full_during_checkpoint(tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", DISK_FULL, "train", *DEBUG, "--run-dir", str(run), *SMALL_RUN],
                       capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert_user_error(r, "No space left on device", "free disk space")
    assert not tmp_files(run) and not list((run / "checkpoints").glob("*"))


# ============================================================================ Python API

def test_api_unknown_env_id():
    from envs import EnvError, make_env
    with pytest.raises(EnvError, match="did you mean 'CartPole-v1'"):
        make_env("CartPol-v1")


def test_api_module_spec_does_not_import():
    from envs import EnvError, make_env
    with pytest.raises(EnvError, match="cannot import module 'qw_no_such_module'"):
        make_env("qw_no_such_module:Env")
    with pytest.raises(EnvError, match="not 'package.module:Name'"):
        make_env("qw_no_such_module:")


def test_api_unsupported_spaces(bad_envs):
    from envs import EnvError, check_env, make_env
    with pytest.raises(EnvError, match="action space MultiDiscrete .* not supported"):
        make_env(bad_envs.MultiDiscreteEnv)
    with pytest.raises(EnvError, match="observation space Tuple is not supported"):
        check_env(bad_envs.TupleObsEnv)


def test_api_observation_does_not_match_space(bad_envs):
    from envs import EnvError, make_env
    with pytest.raises(EnvError, match=r"expected shape \(3,\).*got shape \(4,\)"):
        make_env(bad_envs.WrongShapeEnv).reset()
    with pytest.raises(EnvError, match="expected dtype uint8 .* got dtype float32"):
        make_env(bad_envs.FloatImageEnv).reset()
    with pytest.raises(EnvError, match=r"expected dtype float32 shape \(3,\), got dtype int64 .*astype\(np.float32\)"):
        make_env(bad_envs.IntVectorEnv).reset()


def test_api_nan_reward(bad_envs):
    from envs import EnvError, make_env
    with pytest.raises(EnvError, match="non-finite reward nan .* clip_nonfinite_reward=True"):
        make_env(bad_envs.NanRewardEnv).rollout(3)
    rewards = make_env(bad_envs.NanRewardEnv, clip_nonfinite_reward=True).rollout(3)["next", "reward"]
    assert torch.equal(rewards, torch.zeros_like(rewards))


def test_api_config_errors(tmp_path):
    from quatrix_world.config import ConfigError, load_config, read_yaml
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:\n  b: 1\n   c: 2\n")
    with pytest.raises(ConfigError, match="line 3"):
        read_yaml(str(bad))
    with pytest.raises(ConfigError, match="did you mean 'world.hidden_size'"):
        load_config(["default.yaml"], ["world.hiden_size=3"])
    with pytest.raises(ConfigError, match="wrong type for 'agent.horizon': expected int"):
        load_config(["default.yaml"], ["agent.horizon=[1]"])
    tag = tmp_path / "tag.yaml"
    tag.write_text("seed: !!python/name:os.system\n")
    with pytest.raises(ConfigError, match="refused YAML tag"):
        read_yaml(str(tag))


@pytest.mark.parametrize("override", ["trainer.batch_size=0", "agent.horizon=0", "agent.group_size=-1",
                                      "trainer.replay_ratio=0", "world.encoder.patch_size=0"])
def test_api_non_positive_sizes(override):
    from quatrix_world.config import ConfigError, load_config
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"{key} must be > 0"):
        load_config(["default.yaml", "debug.yaml"], [override])


def test_api_image_smaller_than_patch():
    from agents.collect import build_env, env_specs
    from quatrix_world.config import load_config
    from quatrix_world.encoders import SpecError
    from quatrix_world.world import QuatrixWorld
    cfg = load_config(["default.yaml", "debug.yaml"], ["world.encoder.patch_size=64"])
    obs, act = env_specs(build_env(cfg, 0))
    assert obs["image"]["shape"][:2] == [56, 56]
    with pytest.raises(SpecError, match="image 56x56 does not tile into world.encoder.patch_size=64 patches"):
        QuatrixWorld(cfg.world, obs, act)


def test_api_checkpoint_missing_and_corrupt(debug_run, tmp_path):
    from quatrix_world.checkpoint import CheckpointError, load_checkpoint
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    data = (debug_run / "checkpoints" / "latest.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(tmp_path / "cut.pt"))
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a quatrix-world checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


def test_api_checkpoint_for_a_different_env(debug_run):
    from quatrix_world.checkpoint import check_compatible
    from quatrix_world.checkpoint import CheckpointError, load_checkpoint
    from quatrix_world.config import config_from_yaml_text
    ck = load_checkpoint(str(debug_run))
    cfg = config_from_yaml_text(ck["config"])
    check_compatible(ck, cfg, ck["spec"])                 # itself: fine
    other = json.loads(json.dumps(ck["spec"]))
    other["action"]["n"] = 4
    with pytest.raises(CheckpointError, match="field 'action.n' differs"):
        check_compatible(ck, cfg, other)
    cfg.agent.critic_lr = 1e-5                              # may change on resume
    check_compatible(ck, cfg, ck["spec"])
    cfg.agent.hidden_size = 8                               # sorts after critic_lr: still named
    with pytest.raises(CheckpointError, match="'agent.hidden_size' differs"):
        check_compatible(ck, cfg, ck["spec"])
    cfg.world.hidden_size = 8
    with pytest.raises(CheckpointError, match="'world.hidden_size', 'agent.hidden_size' differ —"):
        check_compatible(ck, cfg, ck["spec"])


def test_api_disk_full_keeps_previous_checkpoint(monkeypatch, tmp_path):
    import errno
    from quatrix_world import checkpoint as ckpt
    path = tmp_path / "latest.pt"
    ckpt.save_checkpoint(str(path), config_yaml="seed: 0\n", spec={"obs": {}}, state={"w": torch.ones(3)})
    before = digest(path)

    def full(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    with pytest.raises(OSError) as info:
        ckpt.save_checkpoint(str(path), config_yaml="seed: 1\n", spec={"obs": {}}, state={"w": torch.zeros(3)})
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert digest(path) == before and os.listdir(tmp_path) == ["latest.pt"]
    ck = ckpt.load_checkpoint(str(path))
    assert torch.equal(ck["w"], torch.ones(3)) and ck["config"] == "seed: 0\n"
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.save_checkpoint(str(tmp_path / "nodir" / "x.pt"), config_yaml="", spec={}, state={})


def _rewrite(latest, change):
    """Load a checkpoint's payload, change it, save it with a valid checksum (a well-formed file)."""
    from quatrix_world.checkpoint import content_digest
    ck = torch.load(latest, weights_only=True)
    change(ck)
    ck.pop("sha256", None)
    ck["sha256"] = content_digest(ck)
    torch.save(ck, latest)


@pytest.mark.parametrize("case, change, fragments", [
    ("yaml tag in its config", lambda ck: ck.update(config="seed: !!python/object/apply:os.system ['true']\n"),
     ["not plain YAML", "only load checkpoints written by quatrix-world"]),
    ("non-JSON spec", lambda ck: ck.update(spec="{not json"), ["has an unreadable spec (not JSON)"]),
    ("weights of another shape", lambda ck: ck["world"].update(h0=torch.zeros(3)),
     ["does not fit this model", "h0", "load it with the config it was trained with"]),
])
def test_cli_malformed_checkpoints_are_one_line(case, change, fragments, run_copy):
    _rewrite(run_copy / "checkpoints" / "latest.pt", change)
    assert_user_error(cli("eval", "--checkpoint", str(run_copy), "--episodes", "1"), *fragments)


def test_cli_resume_with_a_fresh_episode(run_copy):
    """--fresh-episode: resume without replaying the interrupted episode (a new one starts)."""
    from quatrix_world.checkpoint import load_checkpoint
    before = load_checkpoint(str(run_copy / "checkpoints" / "latest.pt"))["counters"]
    r = cli("train", "--resume", str(run_copy), "--fresh-episode", "--quiet",
            "--set", f"trainer.total_steps={before['step'] + 20}")
    assert r.returncode == 0, r.stderr[-3000:]
    after = load_checkpoint(str(run_copy / "checkpoints" / "latest.pt"))["counters"]
    assert after["step"] == before["step"] + 20 and after["episodes"] > before["episodes"]
    assert_user_error(cli("train", "--config", "configs/debug.yaml", "--fresh-episode", "--run-dir",
                          str(run_copy.parent / "new")), "--fresh-episode goes with --resume")
