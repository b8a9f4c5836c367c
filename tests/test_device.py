"""run.device / run.precision: device plumbing through the trainer, and the errors a user can cause."""
import subprocess
import sys

import pytest
import torch

from agents.device import resolve_device, resolve_precision
from agents.trainer import Trainer
from quatrix_world.config import ConfigError, load_config

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_auto_picks_what_torch_sees():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(ConfigError, match="run.device=cpu"):
        resolve_device("cuda")
    r = subprocess.run([sys.executable, "-m", "agents.cli", "train", "--config", "configs/debug.yaml",
                        "--set", "run.device=cuda", "--dry-run"], capture_output=True, text=True)
    assert r.returncode != 0 and "no CUDA GPU" in r.stderr and "Traceback" not in r.stderr


def test_bad_device_and_precision_names_are_refused():
    with pytest.raises(ConfigError, match="run.device"):
        load_config(["default.yaml"], ["run.device=gpu"])
    with pytest.raises(ConfigError, match="run.precision"):
        load_config(["default.yaml"], ["run.precision=fp16"])
    with pytest.raises(ConfigError, match="run.update_threads"):
        load_config(["default.yaml"], ["run.update_threads=-1"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_everything_the_run_creates_lives_on_its_device(tmp_path, device, precision):
    cfg = load_config(["default.yaml", "debug.yaml"],
                      [f"run.device={device}", f"run.precision={precision}", "trainer.progress=false",
                       "agent.kind=grpo", "trainer.eval_episodes=2"])
    tr = Trainer(cfg, str(tmp_path), quiet=True)
    tr.start_collection()
    while tr.step < cfg.trainer.prefill or not tr.replay.ready():
        tr.collect_step()
    metrics = tr.train_step()
    assert all(isinstance(v, float) and v == v for v in metrics.values())
    for module in (tr.world, tr.agent):
        assert {p.device.type for p in module.parameters()} == {device}
        assert {b.device.type for b in module.buffers()} <= {device}
    for _ in range(3):                                    # acting through the cached step on the device
        tr.collect_step()
    assert tr.actor.state["h"].device.type == device
    row = tr.evaluate()
    assert row["eval/return_sampled"] >= 0.0
