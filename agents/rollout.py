"""Using a trained run: load it, evaluate it, imagine with it, record it."""
from __future__ import annotations

import os

import numpy as np
import torch

from quatrix_world.checkpoint import check_compatible, load_checkpoint, load_weights
from quatrix_world.config import config_from_yaml_text
from quatrix_world.errors import UsageError
from quatrix_world.files import write_json  # noqa: F401  (bench/ and the CLI write results with it)
from quatrix_world.world import QuatrixWorld

from . import build_agent
from .collect import build_env, env_specs
from .policy import OnlinePolicy, episode_batch, play_episode


class LoadedRun:
    def __init__(self, checkpoint: str, seed: int | None = None):
        ck = load_checkpoint(checkpoint)
        self.path = ck["path"]
        self.cfg = config_from_yaml_text(ck["config"])
        if self.cfg.run.threads:
            torch.set_num_threads(self.cfg.run.threads)
        self.env = build_env(self.cfg, self.cfg.seed + 20_000 if seed is None else seed)
        obs_desc, act_desc = env_specs(self.env)
        check_compatible(ck, self.cfg, {"obs": obs_desc, "action": act_desc})
        self.world = QuatrixWorld(self.cfg.world, obs_desc, act_desc)
        load_weights(self.world, ck["world"], ck["path"])
        self.world.eval()
        self.agent = build_agent(self.cfg.agent, self.world.feat_dim, self.world.act_desc)
        load_weights(self.agent, ck["agent"], ck["path"])
        self.step = ck["counters"]["step"]
        self.obs_keys = list(obs_desc)

    @property
    def run_dir(self) -> str:
        d = os.path.dirname(self.path)
        return os.path.dirname(d) if os.path.basename(d) == "checkpoints" else d

    def episode(self, seed: int, deterministic: bool = False, max_steps: int | None = None):
        """One real episode -> dict(obs, actions, rewards, frames, return)."""
        return play_episode(self.world, self.agent, self.env, self.cfg.trainer.seq_len - 1, seed, deterministic,
                            max_steps, keep=True)

    def evaluate(self, episodes: int = 10, deterministic: bool = False) -> dict:
        """Mean and per-episode returns on fresh episodes (sampled actions unless deterministic)."""
        return evaluate(self, episodes, deterministic)

    def imagine(self, horizon: int | None = None, group: int = 1, context: int = 4, seed: int = 0):
        """`context` real steps, then `horizon` (default: as long as the model trained for) imagined
        steps in `group` branches -> (labelled RGB frames: the real context, then each imagined step
        with the branches side by side; the imagined TensorDict)."""
        horizon = horizon or max(1, self.cfg.trainer.seq_len - context)
        return imagine_frames(self, horizon, group, context, seed)

    def policy(self, deterministic: bool = False) -> "Policy":
        """The agent acting in this run's env (reset with `policy.reset()` at each new episode)."""
        return Policy(self, deterministic)


class Policy:
    """`step(td)` -> the action for the current observation of `run.env` (a TensorDict from its
    reset/step), keeping the episode's context in the world model as the trainer's acting does."""

    def __init__(self, run: LoadedRun, deterministic: bool):
        self.online = OnlinePolicy(run.world, run.agent, run.cfg.trainer.seq_len - 1)
        self.deterministic = deterministic

    def reset(self) -> None:
        self.online.reset()

    def step(self, td) -> torch.Tensor:
        action = self.online.act({k: td[k] for k in self.online.world.obs_desc}, self.deterministic)
        self.online.record(action)
        return action


def evaluate(run: LoadedRun, episodes: int, deterministic: bool) -> dict:
    returns = [run.episode(30_000_000 + i, deterministic)["return"] for i in range(episodes)]
    result = {"checkpoint": run.path, "env": run.cfg.env.id, "step": run.step, "episodes": episodes,
              "deterministic": deterministic, "mean_return": float(np.mean(returns)),
              "std_return": float(np.std(returns)), "returns": returns}
    return result


def _image_key(world):
    for k, d in world.obs_desc.items():
        if d["kind"] == "image":
            return k
    return None


@torch.no_grad()
def imagine_frames(run: LoadedRun, horizon: int, group: int = 1, context: int = 4, seed: int = 0):
    """Real context of `context` steps, then `horizon` imagined steps per branch -> frames."""
    key = _image_key(run.world)
    if key is None:
        raise UsageError(f"{run.cfg.env.id} has no image observation to render an imagined rollout of")
    from envs.video import labelled
    ep = run.episode(seed, max_steps=context)
    k = len(ep["actions"])
    state = run.world.observe(episode_batch(ep, k, run.world), sample=False)
    traj = run.world.imagine(state, run.agent.actor, horizon, group_size=group)     # [G, H]
    names = [f"branch {g + 1}" for g in range(group)] if group > 1 else None
    frames = [labelled([ep["obs"][t][key].numpy()] * group, f"real step {t} (context {t + 1}/{k})", labels=names)
              for t in range(k)]
    for t in range(horizon):
        f = run.world.split_features(traj["feat"][:, t])
        imgs = run.world.decode(f.z, f.h)[key].numpy()                                   # [G, h, w, c]
        r = traj["reward"][:, t]
        frames.append(labelled(list(imgs), f"imagined step {k - 1 + t + 1} (+{t + 1}/{horizon}) "
                               f"r^ {float(r.mean()) + 0.0:+.2f}", labels=names))
    return frames, traj


@torch.no_grad()
def imagine_qmap(run: LoadedRun, horizon: int, path: str, context: int = 4, seed: int = 0) -> None:
    """Q-map PNG of the dynamics core over a real context plus an imagined rollout."""
    from quatrix_world.qmap import q_map_for_rollout, save_q_map_png
    ep = run.episode(seed, max_steps=context)
    state = run.world.observe(episode_batch(ep, len(ep["actions"]), run.world), sample=False)
    out = q_map_for_rollout(run.world, state, run.agent.actor, horizon)
    save_q_map_png(out["weights"], path, title=f"{run.cfg.env.id}: core Q(s,a) over past steps "
                   f"(step {run.step})", context=out["context"])


@torch.no_grad()
def open_loop(run: LoadedRun, seed: int, context: int = 4):
    """Real episode vs the world model fed the same actions open-loop after `context` steps."""
    key = _image_key(run.world)
    if key is None:
        raise UsageError(f"{run.cfg.env.id} has no image observation to record side by side")
    ep = run.episode(seed)
    n = len(ep["actions"])
    k = min(context, n)
    state = run.world.observe(episode_batch(ep, k, run.world), sample=False)
    end = min(n, k - 1 + run.cfg.world.max_seq_len - state["pos"])    # positions the core can imagine
    real, imag, rhat = [], [], []
    for t in range(k - 1, end):
        real.append(ep["frames"][t])
        imag.append(run.world.decode(state["z"], state["h"])[key][0].numpy())
        state = run.world.step(state, ep["actions"][t][None])
        rhat.append(float(state["reward"][0]))
    rewards = ep["rewards"][k - 1:]
    captions = [f"step {k - 1 + i}  reward {r + 0.0:+.2f}  predicted {round(p, 2) + 0.0:+.2f}"
                for i, (r, p) in enumerate(zip(rewards, rhat))]
    return real, imag, captions, ep
