"""README "Plug in your own environment": write its code block to the file it names and run its
commands, exactly as written, with the installed `quatrix-world` console script in a fresh directory."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADING = "## Plug in your own environment"


def section() -> str:
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert HEADING in text
    body = text.split(HEADING, 1)[1]
    return re.split(r"^## ", body, maxsplit=1, flags=re.M)[0]


def console_script() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "quatrix-world")
    return exe if os.path.isfile(exe) else shutil.which("quatrix-world")


def test_readme_custom_env_trains(tmp_path):
    sec = section()
    blocks = re.findall(r"```(\w*)\n(.*?)```", sec, flags=re.S)
    code = [b for lang, b in blocks if lang == "python"]
    cmds = [line for lang, b in blocks if lang == "bash" for line in b.splitlines() if line.strip()]
    assert len(code) == 1 and cmds
    filename = re.search(r"Save this as\s+`([\w/]+\.py)`", sec).group(1)
    (tmp_path / filename).write_text(code[0])

    exe = console_script()
    assert exe, "the quatrix-world console script is not installed (pip install -e .)"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    for k in ("PYTHONPATH", "RANK", "WORLD_SIZE", "QUATRIX_DEBUG"):
        env.pop(k, None)                       # the README promises no PYTHONPATH is needed
    assert [shlex.split(c)[:2] for c in cmds] == [["quatrix-world", "env-check"], ["quatrix-world", "train"]]
    outputs = []
    for c in cmds:
        argv = shlex.split(c)
        r = subprocess.run([exe, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (c, r.stdout[-2000:], r.stderr[-3000:])
        outputs.append(r.stdout)
    assert ": OK" in outputs[0] and "-> MLP" in outputs[0] and "discrete, 2 actions" in outputs[0]

    run = tmp_path / "runs" / "debug-actor_critic-s0"
    latest = run / "checkpoints" / "latest.pt"
    assert latest.is_file() and (run / "checkpoints" / "best.pt").is_file()
    ck = torch.load(latest, map_location="cpu", weights_only=True)
    assert "my_envs:WalkEnv" in ck["config"] and ck["counters"]["step"] > 0

    # the README says later commands re-import the module from the same directory
    r = subprocess.run([exe, "eval", "--checkpoint", "runs/debug-actor_critic-s0", "--episodes", "1"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "eval.json").is_file()
