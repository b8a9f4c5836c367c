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
from .evaluate import episode_metrics, summarize_metrics
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
        self.agent = build_agent(self.cfg.agent, self.world.feat_dim, self.world.act_desc,
                                 self.world.latent_shape)
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
        with one row per branch; the imagined TensorDict [group, horizon]: feat, action, reward, ...).
        `run.world.decode(z, h)` turns any imagined latent back into observations."""
        horizon = horizon or trained_horizon(self, context)
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


def evaluate(run: LoadedRun, episodes: int, deterministic: bool, progress=None) -> dict:
    """Returns of `episodes` fresh episodes (`progress(1)` is called after each)."""
    returns, rows = [], []
    for i in range(episodes):
        returns.append(run.episode(30_000_000 + i, deterministic)["return"])
        metrics = episode_metrics(run.env)          # the env's own numbers (Crafter: achievements), if any
        if metrics is not None:
            rows.append(metrics)
        if progress is not None:
            progress(1)
    result = {"checkpoint": run.path, "env": run.cfg.env.id, "step": run.step, "episodes": episodes,
              "deterministic": deterministic, "mean_return": float(np.mean(returns)),
              "std_return": float(np.std(returns)), "returns": returns}
    result.update({k.removeprefix("eval/"): v for k, v in summarize_metrics(run.env, rows).items()})
    return result


def _image_key(world):
    for k, d in world.obs_desc.items():
        if d["kind"] == "image":
            return k
    return None


def _signed(x) -> str:
    """+0.12 / -0.12, and +0.00 (never -0.00) for what rounds to zero."""
    return f"{round(float(x), 2) + 0.0:+.2f}"


def trained_horizon(run: LoadedRun, context: int) -> int:
    """Imagined steps after `context` real ones that stay on positions the model trained on."""
    return max(1, run.cfg.trainer.seq_len - context)


def _imagine(run: LoadedRun, horizon: int, group: int, context: int, seed: int):
    """`context` real steps (episode `seed`), then `horizon` imagined ones in `group` branches ->
    (the real episode so far, its step count k, the imagined TensorDict [G, H])."""
    ep = run.episode(seed, max_steps=context)
    k = len(ep["actions"])
    state = run.world.observe(episode_batch(ep, k, run.world), sample=False)
    traj = run.world.imagine(state, run.agent.actor, horizon, group_size=group)     # [G, H]
    return ep, k, traj


def cut_reason(run: LoadedRun, context: int, horizon: int, short: bool = False) -> str:
    """Why an imagined rollout of `horizon` steps after `context` real ones stops where it does
    (short: without the "the trained horizon" label, for a picture's narrow caption)."""
    if horizon >= trained_horizon(run, context):
        why = f"the model trained on {run.cfg.trainer.seq_len}-step windows"
        return why if short else f"the trained horizon: {why}"
    return f"--horizon {horizon}"


def _cut_note(run: LoadedRun, context: int, horizon: int) -> str:
    return "end: " + cut_reason(run, context, horizon, short=True)


@torch.no_grad()
def imagine_frames(run: LoadedRun, horizon: int, group: int = 1, context: int = 4, seed: int = 0,
                   progress=None):
    """Video frames: the real context (the same frame in every row), then each imagined step with
    one row per branch, its predicted reward beside it; the last frame says where imagination
    stops and why. -> (frames, the imagined TensorDict [G, H])."""
    key = _image_key(run.world)
    if key is None:
        raise UsageError(f"{run.cfg.env.id} has no image observation to render as frames — write a plot "
                         "instead (imagine --out FILE.png)")
    from envs.video import branch_rows
    ep, k, traj = _imagine(run, horizon, group, context, seed)
    labels = [f"branch {g + 1}" for g in range(group)]
    frames = [branch_rows([ep["obs"][t][key].numpy()] * group, [f"real step {t} (context {t + 1}/{k})", ""],
                          labels, ["real (context)"] * group) for t in range(k)]
    total = torch.zeros(group)
    for t in range(horizon):
        f = run.world.split_features(traj["next_feat"][:, t])     # the state after the t-th imagined action
        imgs = run.world.decode(f.z, f.h)[key].float().cpu().numpy()                     # [G, h, w, c]
        r = traj["reward"][:, t].float().cpu()
        total += r
        title = [f"imagined step {k - 1 + t + 1} (+{t + 1}/{horizon})",
                 _cut_note(run, context, horizon) if t == horizon - 1 else ""]
        notes = [f"r^ {_signed(r[g])}  sum {_signed(total[g])}" for g in range(group)]
        frames.append(branch_rows(list(imgs), title, labels, notes))
        if progress is not None:
            progress(1)
    return frames, traj


@torch.no_grad()
def imagine_picture(run: LoadedRun, horizon: int, group: int = 1, context: int = 4, seed: int = 0) -> np.ndarray:
    """One picture: a row per branch, the real context frames then the imagined steps as columns."""
    key = _image_key(run.world)
    from envs.video import grid
    ep, k, traj = _imagine(run, horizon, group, context, seed)
    real = [ep["obs"][t][key].numpy() for t in range(k)]
    imagined = []
    for t in range(horizon):
        f = run.world.split_features(traj["next_feat"][:, t])     # the state after the t-th imagined action
        imagined.append(run.world.decode(f.z, f.h)[key].float().cpu().numpy())            # [G, h, w, c]
    rows = [real + [imagined[t][g] for t in range(horizon)] for g in range(group)]
    cols = [f"real {t}" for t in range(k)] + [f"+{t + 1}" for t in range(horizon)]
    title = (f"{run.cfg.env.id}, step {run.step}: {k} real steps, then {horizon} imagined "
             f"({_cut_note(run, context, horizon)})")
    return grid(rows, cols, [f"branch {g + 1}" for g in range(group)], title, scale=2 if k + horizon <= 16 else 1)


@torch.no_grad()
def imagine_vectors(run: LoadedRun, horizon: int, path: str, group: int = 1, context: int = 4, seed: int = 0) -> dict:
    """A PNG of each vector observation dimension and the reward: the real context, each branch's
    imagined steps (dashed), and the real env given the same actions (solid, as long as its
    episode runs). -> {"real_steps": [per branch], "imagined": G x H}."""
    keys = [k for k, d in run.world.obs_desc.items() if d["kind"] == "vector"]
    if not keys:
        raise UsageError(f"{run.cfg.env.id} has no vector observation to plot — write a video (.mp4/.gif)")
    ep, k, traj = _imagine(run, horizon, group, context, seed)
    actions = traj["action"].cpu()                                                   # [G, H, ...]
    every = [(key, d) for key in keys for d in range(run.world.obs_desc[key]["shape"][0])]
    dims = every[:8]                                                                   # a readable figure
    real_ctx = {kd: [float(ep["obs"][t][kd[0]][kd[1]]) for t in range(k)] for kd in dims}
    branches = []
    for g in range(group):
        f = run.world.split_features(traj["next_feat"][g])                           # [H, ...] after each action
        dec = run.world.decode(f.z, f.h)
        imag = {kd: dec[kd[0]][:, kd[1]].float().cpu().tolist() for kd in dims}
        real = _replay(run, seed, ep["actions"][:k - 1], actions[g])                 # the same actions, for real
        branches.append((imag, traj["reward"][g].float().cpu().tolist(), real))
    note = f"{_cut_note(run, context, horizon)}" + (f"; the first {len(dims)} of {len(every)} dimensions"
                                                     if len(dims) < len(every) else "")
    _plot_vectors(path, run, dims, real_ctx, ep["rewards"][:k - 1], k, branches, note)
    return {"real_steps": [len(b[2]["rewards"]) for b in branches], "imagined": [group, horizon]}


def _replay(run: LoadedRun, seed: int, context_actions: list, actions: torch.Tensor) -> dict:
    """Reset the env with `seed`, take the context actions, then `actions` until the episode ends ->
    the observations after each of those actions and their rewards."""
    from torchrl.envs.utils import step_mdp
    env = run.env
    env.set_seed(seed)
    td = env.reset()
    for a in context_actions:
        td["action"] = a.to(env.action_spec.dtype).reshape(env.action_spec.shape)
        td = step_mdp(env.step(td))
    out = {"obs": [], "rewards": []}
    for a in actions:
        td["action"] = a.to(env.action_spec.dtype).reshape(env.action_spec.shape)
        td = env.step(td)
        out["obs"].append({key: td["next", key] for key in run.world.obs_desc})
        out["rewards"].append(float(td["next", "reward"]))
        if bool(td["next", "done"]):
            break
        td = step_mdp(td)
    return out


def _plot_vectors(path, run, dims, real_ctx, ctx_rewards, k, branches, note) -> None:
    from matplotlib import rcParams
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure                  # no pyplot: a notebook's backend stays as it is
    from matplotlib.ticker import MaxNLocator

    from quatrix_world.files import atomic_path
    n = len(dims) + 1
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        if i < len(dims):
            key, d = dims[i]
            ax.plot(range(k), real_ctx[(key, d)], color="black", marker="o", ms=3, label="real context")
            for g, (imag, _, real) in enumerate(branches):
                c = colours[g % len(colours)]
                xs = range(k, k + len(imag[(key, d)]))
                ax.plot(xs, imag[(key, d)], ls="--", color=c, label=f"branch {g + 1} imagined")
                ax.plot(range(k, k + len(real["obs"])), [float(o[key][d]) for o in real["obs"]], color=c,
                        label=f"branch {g + 1} real, same actions")
            ax.set_title(f"{key}[{d}]", fontsize=10)
        else:
            ax.plot(range(1, k), ctx_rewards, color="black", marker="o", ms=3, label="real context")
            for g, (_, rhat, real) in enumerate(branches):
                c = colours[g % len(colours)]
                ax.plot(range(k, k + len(rhat)), rhat, ls="--", color=c, label=f"branch {g + 1} imagined")
                ax.plot(range(k, k + len(real["rewards"])), real["rewards"], color=c,
                        label=f"branch {g + 1} real, same actions")
            ax.set_title("reward (after the step's action)", fontsize=10)
        ax.axvline(k - 0.5, color="grey", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("env step (grey line: imagination starts)")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{run.cfg.env.id}, step {run.step}: imagined (dashed) vs the real env given the same actions "
                 f"(solid)\n{note}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


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
    end = min(n, run.cfg.trainer.seq_len)          # positions past the trained window were never trained
    real, imag, rhat = [], [], []
    for t in range(k - 1, end):
        real.append(ep["frames"][t])
        imag.append(run.world.decode(state["z"], state["h"])[key][0].float().cpu().numpy())
        state = run.world.step(state, ep["actions"][t][None])
        rhat.append(float(state["reward"][0]))
    rewards = ep["rewards"][k - 1:]
    captions = [f"step {k - 1 + i}  reward {_signed(r)}  predicted {_signed(p)}"
                for i, (r, p) in enumerate(zip(rewards, rhat))]
    if end < n and captions:
        captions[-1] += f"  (open loop ends: trained on {run.cfg.trainer.seq_len}-step windows)"
    return real, imag, captions, ep
