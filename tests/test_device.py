"""run.device / run.precision / run.compile: device plumbing through the trainer, the compiled update
against the eager one, and the errors a user can cause."""
import math
import subprocess
import sys

import pytest
import torch

import agents.trainer
from agents.device import resolve_device, resolve_precision
from agents.trainer import Trainer
from quatrix_world.config import ConfigError, load_config
from test_agents import prefilled_trainer

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


@pytest.mark.parametrize("kind", ["actor_critic", "grpo"])
def test_the_compiled_update_agrees_with_the_eager_one(tmp_path, monkeypatch, kind):
    """run.compile: the world-model loss and the agent's losses each trace as one whole graph
    (fullgraph: a graph break fails) and give the eager update's losses and gradient norms. Traced
    with the aot_eager backend here: inductor's code generation takes minutes on a CPU, and
    bench/gpu.py times the real one."""
    compiled = []

    def compile_update(fn, cudagraphs):
        compiled.append(fn.__name__)
        return torch.compile(fn, backend="aot_eager", fullgraph=True)
    monkeypatch.setattr(agents.trainer, "compile_update", compile_update)
    sets = [f"agent.kind={kind}", "agent.replay_critic=0.3", "run.precision=fp32"]   # bf16 rounds past the tolerance
    eager = prefilled_trainer(tmp_path / "eager", sets).train_step()
    tr = prefilled_trainer(tmp_path / "compiled", [*sets, "run.compile=true"])
    first = tr.train_step()
    assert sorted(compiled) == ["loss", "losses"]                 # world.loss, agent.losses: once each
    assert first.keys() == eager.keys()
    for k in eager:
        assert math.isclose(first[k], eager[k], rel_tol=1e-3, abs_tol=1e-5), (k, first[k], eager[k])
    second = tr.train_step()                                      # the compiled graphs run again
    assert all(math.isfinite(v) for v in second.values()) and second["train/updates"] == 2
    assert sorted(compiled) == ["loss", "losses"]


def test_cuda_graphs_need_compile_and_a_gpu(tmp_path):
    with pytest.raises(ConfigError, match="set run.compile=true"):
        load_config(["default.yaml"], ["run.cudagraphs=true"])
    if not torch.cuda.is_available():
        cfg = load_config(["default.yaml", "debug.yaml"], ["run.compile=true", "run.cudagraphs=true",
                                                           "run.device=cpu"])
        with pytest.raises(ConfigError, match="needs a CUDA device.*run.cudagraphs=false"):
            Trainer(cfg, str(tmp_path / "run"), quiet=True)
        assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())   # nothing half-written
