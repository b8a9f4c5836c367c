"""Evaluation during training: fresh episodes on their own envs and seeds, played together.

Every `trainer.eval_every` env steps the agent plays `trainer.eval_episodes` episodes with sampled
actions (`eval/return_sampled`, the policy as trained) and, with `trainer.eval_deterministic`, as
many with the most likely action (`eval/return`). Evaluation draws from its own seeds and restores
the global RNG afterwards, so it never shifts training. An episode is cut at the env's own time
limit, or at `trainer.eval_max_steps` for an env without one, so no env can hang evaluation.

Env metrics: a gymnasium env (or a wrapper of it) may define `episode_metrics() -> {name: number}`,
numbers about the episode it is playing, read from each env once the sampled-action episodes have
ended, and `summary_metrics(rows) -> {name: number}`, numbers over those episodes' rows. Each is
logged as `eval/<name>`: the mean over the episodes, and the summaries as they are (Crafter:
`eval/achievement/<name>`, the success rate in percent, and `eval/crafter_score`).
"""
from __future__ import annotations

import numpy as np
import torch

from quatrix_world.config import Config

from .collect import build_env
from .policy import episode_batch, play_episodes


class Evaluator:
    def __init__(self, cfg: Config, stop=None):
        self.cfg, self.stop = cfg, stop          # stop(): True ends an evaluation at the next step
        self.envs: list = []                     # built once, reset with each episode's own seed

    def envs_for(self, n: int) -> list:
        while len(self.envs) < n:
            self.envs.append(build_env(self.cfg, self.cfg.seed + 10_000 + len(self.envs)))
        return self.envs[:n]

    def step_cap(self) -> int:
        """The env's own episode limit (a time limit it truncates at), else trainer.eval_max_steps."""
        limit = getattr(self.envs_for(1)[0], "quatrix_info", {}).get("max_episode_steps")
        return int(limit) if limit else self.cfg.trainer.eval_max_steps

    def run_episodes(self, world, agent, n: int, deterministic: bool, seed_base: int, keep_first: bool = False):
        """Returns of `n` fresh episodes played together, the first one (with its obs/actions/frames)
        and the env metrics of all of them (`eval/<name>` -> value; see the module docstring)."""
        envs = self.envs_for(n)
        eps = play_episodes(world, agent, envs, self.cfg.trainer.seq_len - 1,
                            [seed_base + i for i in range(n)], deterministic, max_steps=self.step_cap(),
                            keep_first=keep_first, stop=self.stop)
        return [e["return"] for e in eps], eps[0], env_metrics(envs)

    def __call__(self, world, agent, step: int) -> tuple[dict, dict, list]:
        """Scores at env step `step` -> (eval/* row, the first kept episode, imagined frames from it)."""
        t = self.cfg.trainer
        n = t.eval_episodes
        rng = torch.get_rng_state()
        world.eval()
        try:
            smp, first, extra = self.run_episodes(world, agent, n, False, 20_000_000 + step,
                                                  keep_first=not t.eval_deterministic)
            row = {"eval/return_sampled": float(np.mean(smp)), "eval/return_sampled_std": float(np.std(smp)),
                   **extra}
            if t.eval_deterministic:
                det, first, _ = self.run_episodes(world, agent, n, True, 10_000_000 + step, keep_first=True)
                row.update({"eval/return": float(np.mean(det)), "eval/return_std": float(np.std(det))})
            imagined = imagined_frames(world, agent, first, self.cfg) if t.video_every_eval else []
        finally:                                 # also when a stop request ends it early
            world.train()
            torch.set_rng_state(rng)
        return row, first, imagined


def _hook(env, name: str):
    """The method `name` of the gymnasium env inside a made env (any wrapper of it), or None."""
    gym_env = getattr(env, "gym_env", None)
    try:
        return gym_env.get_wrapper_attr(name) if gym_env is not None else None
    except AttributeError:
        return None


def episode_metrics(env) -> dict | None:
    """The env's `episode_metrics()` about the episode it has just played; None without the hook."""
    hook = _hook(env, "episode_metrics")
    return None if hook is None else dict(hook())


def summarize_metrics(env, rows: list) -> dict:
    """`eval/<name>`: the mean of each number over the episodes' `rows`, and the env's
    `summary_metrics(rows)`; {} when there are no rows."""
    if not rows:
        return {}
    names = dict.fromkeys(k for r in rows for k in r)                  # in order, each once
    out = {f"eval/{k}": float(np.mean([r[k] for r in rows if k in r])) for k in names}
    summary = _hook(env, "summary_metrics")
    if summary is not None:
        out.update({f"eval/{k}": float(v) for k, v in summary(rows).items()})
    return out


def env_metrics(envs: list) -> dict:
    """The env metrics of the episodes the envs have just played (one each), as `eval/<name>`."""
    rows = [m for m in map(episode_metrics, envs) if m is not None]
    return summarize_metrics(envs[0], rows)


def imagined_frames(world, agent, episode: dict, cfg: Config) -> list:
    """Decoded frames of a rollout imagined from the first steps of a kept real episode."""
    from quatrix_world.imagine import render_imagination
    key = next((k for k, d in world.obs_desc.items() if d["kind"] == "image"), None)
    if key is None or not episode["actions"]:
        return []
    k = min(cfg.agent.context_len, len(episode["actions"]))
    state = world.observe(episode_batch(episode, k, world), sample=False)
    return [f[0] for f in render_imagination(world, state, agent.actor, cfg.agent.horizon, key)]
