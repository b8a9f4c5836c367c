"""The Python API: train a run, load it, act, evaluate and imagine from a notebook.

    import agents
    run = agents.train("debug.yaml", run_dir="runs/nb", overrides=["seed=1"])    # -> LoadedRun
    run = agents.train({"env": {"id": "CartPole-v1"}, "trainer": {"total_steps": 2000}})   # a dict works too
    run = agents.load("runs/nb")                    # a run folder or a checkpoint file
    run.evaluate(episodes=10)                       # {"mean_return": ..., "returns": [...], ...}
    frames, traj = run.imagine(horizon=8, group=4)  # labelled frames, the imagined TensorDict [4, 8]
    run.world.decode(z, h)                          # any latent back to observations
    policy = run.policy()                           # acts in run.env through the world model
    td = run.env.reset()
    action = policy.step(td)                        # the next action (its context kept for you)
"""
from __future__ import annotations

from quatrix_world.config import Config, default_run_dir, load_config, to_dict

from .rollout import LoadedRun
from .rundir import RunExistsError
from .trainer import Trainer


def train(config="default.yaml", *, run_dir: str | None = None, overrides=(), resume: bool = False,
          force: bool = False, quiet: bool = True) -> LoadedRun:
    """Train as `quatrix-world train` does and return the finished run, loaded from its latest
    checkpoint. `config`: a YAML file or shipped config name, a dict of the same nested shape, or a
    list of them (later ones win), applied after configs/default.yaml; `overrides`: "key=value"
    strings applied last. The run goes to `run_dir`, by default runs/<run.name>."""
    layers = [config] if isinstance(config, (str, dict, Config)) else list(config)
    layers = [to_dict(c) if isinstance(c, Config) else c for c in layers]
    files = [c for c in layers if isinstance(c, str)]
    cfg = load_config(["default.yaml", *[c for c in layers if c != "default.yaml"]], list(overrides))
    run_dir = run_dir or default_run_dir(cfg, files)
    try:
        trainer = Trainer(cfg, run_dir, resume=resume, quiet=quiet, force=force)
    except RunExistsError:
        raise RunExistsError(f"run folder '{run_dir}' already holds a run — continue it with resume=True, replace it "
                          "with force=True, or pass another run_dir=") from None
    try:
        trainer.train()
    finally:
        trainer.close_envs()
    return LoadedRun(run_dir)


def load(path: str, seed: int | None = None) -> LoadedRun:
    """A trained run (its folder, or a checkpoint file) with its env, world model and agent."""
    return LoadedRun(path, seed=seed)
