"""The README's Python API block, run as written (in a temporary folder)."""
import os
import re

import pytest
import torch

from agents.rundir import RunDirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_api_block() -> str:
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = re.split(r"^## ", text.split("## Python API", 1)[1], maxsplit=1, flags=re.M)[0]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_readme_python_api(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_api_block(), "README.md", "exec"), scope)
    run, frames, traj = scope["run"], scope["frames"], scope["traj"]
    assert (tmp_path / "runs" / "notebook" / "checkpoints" / "latest.pt").is_file()
    assert run.step == 300 and traj.batch_size == torch.Size([2, 8])
    assert len(frames) == 4 + 8                          # the real context (4 steps), then 8 imagined
    assert len({f.shape for f in frames}) == 1
    h, w, c = frames[0].shape
    assert c == 3 and h == 2 * 18 + 2 * 56 * 4 + 1       # two title lines, then one 56-px row per branch, 4x
    images = scope["images"]
    assert images.shape == (2, 56, 56, 3) and images.dtype == torch.uint8
    mean = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= mean <= 1.0
    assert run.env.action_spec.is_in(scope["policy"].step(scope["td"]))


def test_train_from_a_dict(tmp_path):
    import agents
    run = agents.train(["debug.yaml", {"env": {"id": "CartPole-v1"}, "trainer": {"total_steps": 120}}],
                       run_dir=str(tmp_path / "cartpole"), overrides=["trainer.eval_episodes=1"])
    assert run.cfg.env.id == "CartPole-v1" and run.step == 120
    assert list(run.world.obs_desc) == ["observation"]       # a lone Box keeps torchrl's name
    with pytest.raises(RunDirError, match="continue it with resume=True, replace it with force=True, or pass "
                                          "another run_dir="):
        agents.train(run.cfg, run_dir=str(tmp_path / "cartpole"))          # a Config object works too
