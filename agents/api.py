"""The Python API: train a run, load it, act, evaluate and imagine from a notebook.

    import agents
    run = agents.train("debug.yaml", run_dir="runs/nb", overrides=["seed=1"])    # -> LoadedRun
    run = agents.load("runs/nb")                    # a run folder or a checkpoint file
    run.evaluate(episodes=10)                       # {"mean_return": ..., "returns": [...], ...}
    frames, traj = run.imagine(horizon=8, group=4)  # decoded imagined frames, the imagined TensorDict
    policy = run.policy()                           # acts in run.env through the world model
    td = run.env.reset()
    action = policy.step(td)                        # the next action (its context kept for you)
"""
from __future__ import annotations

import os

from quatrix_world.config import load_config

from .rollout import LoadedRun
from .trainer import Trainer


def train(config: str | list[str] = "default.yaml", *, run_dir: str | None = None, overrides=(),
          resume: bool = False, force: bool = False, quiet: bool = True) -> LoadedRun:
    """Train as `quatrix-world train` does (configs/default.yaml, then `config`, then `overrides`,
    each "key=value") and return the finished run, loaded from its latest checkpoint."""
    configs = [config] if isinstance(config, str) else list(config)
    cfg = load_config(["default.yaml", *[c for c in configs if os.path.basename(c) != "default.yaml"]],
                      list(overrides))
    run_dir = run_dir or os.path.join(cfg.run.dir, cfg.run.name)
    Trainer(cfg, run_dir, resume=resume, quiet=quiet, force=force).train()
    return LoadedRun(run_dir)


def load(path: str, seed: int | None = None) -> LoadedRun:
    """A trained run (its folder, or a checkpoint file) with its env, world model and agent."""
    return LoadedRun(path, seed=seed)
