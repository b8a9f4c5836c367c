"""The README's Python API block, run as written (in a temporary folder)."""
import os
import re

import torch

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
    assert c == 3 and w == (2 * 56 + 1) * 4              # two 56-px branches, a separator, upscaled 4x
    mean = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= mean <= 1.0
    assert run.env.action_spec.is_in(scope["policy"].step(scope["td"]))
