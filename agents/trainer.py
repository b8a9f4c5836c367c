"""The training loop: collect real steps, train the world model, train the agent in imagination.

Read top to bottom: `Trainer.__init__` builds everything from the config, `Trainer.train` is the
loop (CleanRL style), and the rest are the pieces it calls: acting, one gradient step, evaluation,
logging and checkpoints.

Exact resume: a checkpoint holds weights, optimisers, the replay buffer, every RNG state, the step
and update counters, and the current episode's reset seed and actions. On resume the episode is
replayed action by action (gymnasium envs are deterministic given the seed), so a resumed run
continues exactly where the straight run would be.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
import signal
import threading
import time
import warnings
from collections import deque

import numpy as np
import torch
import torch.nn as nn
from tensordict import TensorDict

from envs import EpisodeReplay, LaneReplay, make_env, render_frame
from quatrix_world.checkpoint import (CheckpointError, first_difference, load_checkpoint,
                                      save_checkpoint)
from quatrix_world.config import Config, config_from_yaml_text, to_yaml
from quatrix_world.encoders import describe_action, describe_obs
from quatrix_world.world import QuatrixWorld

from . import distributed
from .common import build_agent
from .device import autocast, cpu_threads, resolve_device, resolve_precision

ROW_KEYS_NEXT = [("next", "reward"), ("next", "terminated"), ("next", "truncated"), ("next", "done")]


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": json.dumps(random.getstate()),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2],
                      "gauss": np_state[3], "cached": np_state[4]}}


def set_rng_state(d: dict) -> None:
    torch.set_rng_state(d["torch"])
    st = json.loads(d["python"])
    random.setstate((st[0], tuple(st[1]), st[2]))
    n = d["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["gauss"], n["cached"]))


def build_env(cfg: Config, seed: int, num_envs: int = 1):
    opts = dict(cfg.env.options)
    if cfg.env.id.startswith("MiniGrid-"):
        opts.setdefault("full_view", cfg.env.full_view)
    return make_env(cfg.env.id, seed=seed, max_episode_steps=cfg.env.max_episode_steps, num_envs=num_envs,
                    parallel=cfg.trainer.parallel_envs, **opts)


def env_specs(env) -> tuple[dict, dict]:
    """(obs description, action description) of a made env, as plain dicts."""
    kinds = dict(getattr(env, "quatrix_info", {}).get("obs_kinds", {}))
    obs_spec, act_spec = env.observation_spec, env.action_spec
    if env.batch_size:                    # a batched env (num_envs > 1): describe one of its copies
        obs_spec, act_spec = obs_spec[0], act_spec[0]
    keys = [k for k in obs_spec.keys() if isinstance(k, str) and k in kinds] or \
           [k for k in obs_spec.keys() if isinstance(k, str) and k not in ("is_init",)]
    return describe_obs({k: obs_spec[k] for k in keys}, kinds), describe_action(act_spec)


def window_features(world: QuatrixWorld, z: torch.Tensor, zs=None, acts=None) -> torch.Tensor:
    """Features [N, F] of latents z [N, Z] after context tokens zs [N, T, Z], acts [N, T, ...] with
    positions from 0, exactly like a replay window (no context: h0). The recompute-everything
    reference for `QuatrixWorld.observe_step` (and the acting path of batched lanes)."""
    if zs is None:
        h = world.h0.expand(z.shape[0], -1)
    else:
        h = world.run_core(zs, acts, torch.zeros(zs.shape[:2], dtype=torch.bool, device=zs.device))[:, -1]
    return world.features(z, h)


class OnlinePolicy:
    """Runs the world model on the real episode so far and asks the agent for an action.

    One cached core step per env step (`QuatrixWorld.observe_step`): the context holds the
    episode's last window // 2 to `window` (z, a) tokens with positions from 0, like a replay
    window; z is the posterior's mode so acting is deterministic given obs.
    """

    def __init__(self, world: QuatrixWorld, agent, window: int):
        self.world, self.agent, self.window = world, agent, window
        self.reset()

    def reset(self):
        self.state, self.last_action = None, None

    @torch.no_grad()
    def features(self, obs: dict) -> torch.Tensor:
        """[1, F] features of the current step's observation {key: [...]} given this episode's context."""
        dev = self.world.device
        obs = {k: obs[k][None].to(dev) for k in self.world.obs_desc}
        if self.state is None:
            self.state = self.world.acting_state(1, self.window)
            return self.world.observe_step(self.state, obs)
        return self.world.observe_step(self.state, obs, self.last_action[None].to(dev))

    @torch.no_grad()
    def act(self, obs: dict, deterministic: bool = False) -> torch.Tensor:
        return self.agent.act(self.features(obs), deterministic)[0].cpu()

    def record(self, action):
        self.last_action = action.clone()


class LanePolicy:
    """Acting for the N lanes of a batched env (lanes reset on their own, so each keeps its own
    context): one batched encode, then the context of each lane recomputed over its last
    `window` tokens (`window_features`)."""

    def __init__(self, world: QuatrixWorld, agent, window: int, num_lanes: int):
        self.world, self.agent, self.window = world, agent, window
        self.z = [deque(maxlen=window) for _ in range(num_lanes)]
        self.a = [deque(maxlen=window) for _ in range(num_lanes)]

    def reset_lane(self, i: int) -> None:
        self.z[i].clear()
        self.a[i].clear()

    @torch.no_grad()
    def features(self, obs: dict) -> torch.Tensor:
        dev = self.world.device
        z = self.world.encode_mode({k: v.to(dev) for k, v in obs.items()})              # [N, Z]
        self._pending = z
        feats = []
        for i in range(z.shape[0]):
            if self.z[i]:
                ctx = torch.stack(list(self.z[i]))[None], torch.stack(list(self.a[i]))[None].to(dev)
                feats.append(window_features(self.world, z[i:i + 1], *ctx))
            else:
                feats.append(window_features(self.world, z[i:i + 1]))
        return torch.cat(feats)                                                          # [N, F]

    def record(self, actions: torch.Tensor) -> None:
        for i, a in enumerate(actions):
            self.z[i].append(self._pending[i])
            self.a[i].append(a.clone())


class Trainer:
    def __init__(self, cfg: Config, run_dir: str, resume: bool = False, quiet: bool = False):
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self.device = resolve_device(cfg.run.device)
        self.amp_dtype = resolve_precision(cfg.run.precision, self.device)
        self.act_threads, self.update_threads = cpu_threads(cfg.run.threads), cpu_threads(cfg.run.update_threads)
        torch.set_num_threads(self.act_threads)
        self.rank, self.world_size = distributed.setup(self.device.type)
        self.is_main = self.rank == 0
        seed_everything(cfg.seed)
        self.num_envs = cfg.trainer.num_envs
        self.env = build_env(cfg, cfg.seed + 7919 * self.rank, self.num_envs)
        self.obs_desc, self.act_desc = env_specs(self.env)
        self.obs_keys = list(self.obs_desc)
        self.world = QuatrixWorld(cfg.world, self.obs_desc, self.act_desc).to(self.device)
        self.agent = build_agent(cfg.agent, self.world.feat_dim, self.world.act_desc).to(self.device)
        if self.world_size > 1:           # same weights everywhere, different data per rank
            distributed.broadcast_module(self.world)
            distributed.broadcast_module(self.agent)
            self.agent.grad_sync = distributed.average_gradients
            seed_everything(cfg.seed + 7919 * self.rank)
        self.world_opt = torch.optim.Adam(self.world.parameters(), lr=cfg.trainer.world_lr, eps=1e-8)
        t = cfg.trainer
        replay_kw = dict(storage=t.replay_storage, seed=cfg.seed + 7919 * self.rank,
                         scratch_dir=os.path.join(run_dir, "replay")
                         if t.replay_storage == "disk" and self.is_main else None)   # others: private tmp
        if self.num_envs == 1:
            self.replay = EpisodeReplay(t.replay_capacity, t.seq_len, t.batch_size, **replay_kw)
            self.actor = OnlinePolicy(self.world, self.agent, window=t.seq_len - 1)
        else:       # a batched env: one replay stream and one acting context per lane
            self.replay = LaneReplay(self.num_envs, t.replay_capacity, t.seq_len, t.batch_size, **replay_kw)
            self.actor = LanePolicy(self.world, self.agent, t.seq_len - 1, self.num_envs)
            self.lane_return, self.lane_len = torch.zeros(self.num_envs), torch.zeros(self.num_envs, dtype=torch.long)
        self.gen = torch.Generator().manual_seed(cfg.seed + 1 + 7919 * self.rank)
        # counters (all restored on resume)
        self.step = 0              # env steps taken
        self.updates = 0           # gradient steps taken
        self.episodes = 0          # episodes started
        self.wall = 0.0            # training seconds before this process
        self.best = -math.inf
        self.nonfinite = 0
        self.ep_actions: list = []  # actions of the current episode (for exact resume)
        self.ep_return, self.ep_len = 0.0, 0
        self.eval_history: list[dict] = []
        self.seconds = {k: 0.0 for k in ("act", "env", "world", "agent", "eval")}   # where the time goes
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        self.metrics_path = os.path.join(run_dir, "metrics.csv")
        if resume:
            self.load(os.path.join(self.ckpt_dir, "latest.pt"))
        if self.is_main:                  # rank 0 alone writes files
            os.makedirs(self.ckpt_dir, exist_ok=True)
            os.makedirs(os.path.join(run_dir, "videos"), exist_ok=True)
            if not resume:
                with open(os.path.join(run_dir, "config.yaml"), "w") as f:
                    f.write(to_yaml(cfg))
            self._truncate_metrics()
        self._tb = None

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        t = self.cfg.trainer
        start_wall = time.time() - self.wall
        self.start_collection(replay_actions=self.ep_actions)
        bar = self._progress()
        interrupted = False
        self._stop = False
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.step < t.total_steps:
                if self._stop:               # Ctrl-C / SIGTERM: stop at a step boundary, consistent state
                    raise KeyboardInterrupt
                # 1. act in the real env: one step, or one step in each of num_envs lanes
                before = self.step
                finished = self.collect_step()
                # 2. keep the replay ratio: updates_due = (steps since prefill) x ratio
                if self.step >= t.prefill and self.replay.ready():
                    due = int((self.step - t.prefill + 1) * t.replay_ratio)
                    while self.updates < due:
                        self._log(self.train_step())
                for ret, length in finished:
                    self._log({"train/episode_return": ret, "train/episode_length": length})
                    if bar is not None:
                        bar.set_postfix(ret=f"{ret:.2f}", upd=self.updates)
                self.wall = time.time() - start_wall
                # 3. evaluate, checkpoint (each time the step count passes a multiple of the period)
                due_at = lambda every: self.step // every > before // every or self.step >= t.total_steps
                reached = False
                if self.is_main and due_at(t.eval_every):
                    row = self.evaluate()
                    reached = t.target_return is not None and row["eval/return_sampled"] >= t.target_return
                if self.world_size > 1:
                    reached = distributed.broadcast_flag(reached)
                if reached:
                    self.save(os.path.join(self.ckpt_dir, "latest.pt"))
                    break
                if due_at(t.checkpoint_every):
                    self.save(os.path.join(self.ckpt_dir, "latest.pt"))
                if bar is not None:
                    bar.update(self.step - before)
        except KeyboardInterrupt:
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_DFL)     # a second Ctrl-C kills at once
            self.save(os.path.join(self.ckpt_dir, "latest.pt"))
            if self.is_main:
                print(f"interrupted at step {self.step}: checkpoint written to {self.ckpt_dir}/latest.pt "
                      f"(continue with --resume {self.run_dir})", flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bar is not None:
                bar.close()
            if self.world_size > 1 and not interrupted:
                diff = distributed.max_param_difference(self.world) + distributed.max_param_difference(self.agent)
                self._log({"dist/max_param_diff": diff})
                if self.is_main:
                    print(f"data parallel: {self.world_size} ranks, max weight difference across ranks {diff:.3g}")
            if self._tb is not None:
                self._tb.close()
        summary = {"step": self.step, "updates": self.updates, "episodes": self.episodes,
                   "best_eval_return": self.best, "wall_seconds": self.wall, "interrupted": interrupted}
        if self.eval_history:
            summary["last_eval"] = self.eval_history[-1]
        return summary

    # ------------------------------------------------------------------ env side

    def _request_stop(self, signum, frame) -> None:
        """SIGINT/SIGTERM: finish the current step, write a checkpoint, exit cleanly."""
        if self._stop:                    # asked twice: stop now
            raise KeyboardInterrupt
        self._stop = True

    def start_collection(self, replay_actions=None) -> None:
        """Fresh episode(s) to collect from: the single env (replaying `replay_actions` on resume)
        or every lane of a batched env."""
        if self.num_envs == 1:
            self.td = self._start_episode(replay_actions=replay_actions)
        else:
            self.td = self._start_lanes()

    def collect_step(self) -> list:
        """One env step (one in each lane with num_envs > 1) -> [(return, length)] of finished episodes."""
        return self._collect() if self.num_envs == 1 else self._collect_lanes()

    def _collect(self) -> list:
        """One step of the single env -> [(return, length)] of the episode it ended, if any."""
        obs = {k: self.td[k] for k in self.obs_keys}
        t0 = time.perf_counter()
        if self.step < self.cfg.trainer.prefill:
            action = self._random_action()
            self.actor.features(obs)          # keep the acting context in step
        else:
            action = self.actor.act(obs)
        t1 = time.perf_counter()
        self.td, done = self._env_step(self.td, action)
        self.seconds["act"] += t1 - t0
        self.seconds["env"] += time.perf_counter() - t1
        self.step += 1
        if not done:
            return []
        finished = [(self.ep_return, self.ep_len)]
        self.td = self._start_episode()
        return finished

    def _start_lanes(self) -> TensorDict:
        """Fresh episodes in every lane. A resumed run starts new episodes here: exact resume of the
        interrupted episodes is for num_envs=1 (their rows already in the replay are kept)."""
        self.env.set_seed(self._episode_seed(self.episodes))
        self.episodes += self.num_envs
        for i in range(self.num_envs):
            self.actor.reset_lane(i)
        self.lane_return.zero_()
        self.lane_len.zero_()
        return self.env.reset()

    def _collect_lanes(self) -> list:
        """One step in each lane of the batched env (lanes reset on their own when done)."""
        N = self.num_envs
        feats = self.actor.features({k: self.td[k] for k in self.obs_keys})             # [N, F]
        if self.step < self.cfg.trainer.prefill:
            action = torch.stack([self._random_action() for _ in range(N)])
        else:
            with torch.no_grad():
                action = self.agent.act(feats, False).cpu()
        self.td["action"] = action.to(self.env.action_spec.dtype).reshape(self.env.action_spec.shape)
        td, self.td = self.env.step_and_maybe_reset(self.td)
        self.actor.record(action)
        self.replay.extend(td.select(*self.obs_keys, "action", "is_init", *ROW_KEYS_NEXT))
        self.lane_return += td["next", "reward"].reshape(N)
        self.lane_len += 1
        self.step += N
        finished = []
        for i in td["next", "done"].reshape(N).nonzero().flatten().tolist():
            finished.append((float(self.lane_return[i]), int(self.lane_len[i])))
            self.lane_return[i], self.lane_len[i] = 0.0, 0
            self.actor.reset_lane(i)
            self.episodes += 1
        return finished

    def _episode_seed(self, index: int) -> int:
        return (self.cfg.seed + 7919 * self.rank) * 1_000_003 + index

    def _start_episode(self, replay_actions=None) -> TensorDict:
        """Reset with a seed derived from the episode index; optionally replay actions (resume)."""
        if replay_actions is None:
            self.episodes += 1
            self.ep_actions = []
        self.env.set_seed(self._episode_seed(self.episodes))
        td = self.env.reset()
        self.actor.reset()
        self.ep_return, self.ep_len = 0.0, 0
        for a in list(replay_actions or []):
            obs = {k: td[k] for k in self.obs_keys}
            self.actor.features(obs)
            td, done = self._env_step(td, a, store=False)
            if done:
                raise CheckpointError("replaying the interrupted episode ended it early — the env is not "
                                      "deterministic given its seed, so the run cannot resume exactly")
        return td

    def _random_action(self) -> torch.Tensor:
        a = self.act_desc
        if a["kind"] == "discrete":
            return torch.randint(a["n"], (), generator=self.gen)
        low, high = torch.tensor(a["low"]), torch.tensor(a["high"])
        return low + (high - low) * torch.rand(a["dim"], generator=self.gen)

    def _env_step(self, td: TensorDict, action: torch.Tensor, store: bool = True):
        td["action"] = action.to(self.env.action_spec.dtype).reshape(self.env.action_spec.shape)
        td = self.env.step(td)
        self.actor.record(action)
        row = td.select(*self.obs_keys, "action", "is_init", *ROW_KEYS_NEXT)
        if store:
            self.replay.extend(row)
            self.ep_actions.append(action.clone())
        self.ep_return += float(td["next", "reward"])
        self.ep_len += 1
        done = bool(td["next", "done"])
        from torchrl.envs.utils import step_mdp
        return step_mdp(td, exclude_action=True), done

    # ------------------------------------------------------------------ learning

    def train_step(self) -> dict:
        """One world-model gradient step, then one agent update from imagined rollouts."""
        torch.set_num_threads(self.update_threads)
        try:
            return self._train_step()
        finally:
            torch.set_num_threads(self.act_threads)

    def _train_step(self) -> dict:
        cfg = self.cfg
        batch = self.replay.sample()                                   # [B, T], on the host
        if self.device.type != "cpu":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        self.world.train()
        t0 = time.perf_counter()
        with autocast(self.device, self.amp_dtype):
            loss, metrics, aux = self.world.loss(batch)
        aux = {k: v.float() for k, v in aux.items()}
        self.world_opt.zero_grad(set_to_none=True)
        if not distributed.all_ranks_agree(bool(torch.isfinite(loss))):
            return self._skip_update("world model", metrics)
        loss.backward()
        distributed.average_gradients(self.world.parameters())
        gnorm = nn.utils.clip_grad_norm_(self.world.parameters(), cfg.trainer.world_grad_clip)
        if not torch.isfinite(gnorm):
            self.world_opt.zero_grad(set_to_none=True)
            return self._skip_update("world model gradient", metrics)
        self.world_opt.step()
        metrics["world/grad_norm"] = gnorm
        t1 = time.perf_counter()
        self.seconds["world"] += t1 - t0

        state = self._start_states(aux, self.world.unpack(batch, need_targets=False))
        agent_metrics = self.agent.update(self.world, state)
        self.seconds["agent"] += time.perf_counter() - t1
        finite = all(torch.isfinite(torch.as_tensor(v)).all() for v in agent_metrics.values())
        if not distributed.all_ranks_agree(bool(finite)):
            return self._skip_update("agent", agent_metrics)
        self.nonfinite = 0
        self.updates += 1
        metrics.update(agent_metrics)
        metrics["train/updates"] = self.updates
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(self.device).reshape(())
                              for v in metrics.values()]).tolist()          # one host sync for all
        return dict(zip(metrics, values))

    def _skip_update(self, what: str, metrics: dict) -> dict:
        self.nonfinite += 1
        self.updates += 1
        warnings.warn(f"step {self.step}: non-finite {what} loss — update skipped "
                      f"({self.nonfinite}/{self.cfg.trainer.max_nonfinite_skips} in a row)")
        if self.nonfinite >= self.cfg.trainer.max_nonfinite_skips:
            raise TrainingError(f"the {what} loss was non-finite for {self.nonfinite} updates in a row at step "
                                f"{self.step}; stopped. The last good checkpoint is {self.ckpt_dir}/latest.pt — "
                                "lower trainer.world_lr / agent.lr and --resume")
        return {"train/skipped_updates": 1.0}

    def _start_states(self, aux: dict, d: dict) -> dict:
        """Imagination starts: windows of `context_len` real steps ending at random positions."""
        a = self.cfg.agent
        z = aux["z"]
        B, T = z.shape[:2]
        K = min(a.context_len, T)
        per_seq = max(1, a.starts // B)
        ends = torch.randint(K - 1, T, (B, per_seq), generator=self.gen).to(z.device)  # [B, M]
        idx = (ends[..., None] - torch.arange(K - 1, -1, -1, device=z.device))          # [B, M, K]
        b = torch.arange(B, device=z.device)[:, None, None].expand_as(idx)
        gather = lambda x: x[b, idx].flatten(0, 1)
        return self.world.observe_latents(gather(z), gather(d["action"]), gather(d["is_init"]))

    # ------------------------------------------------------------------ evaluation

    def run_episodes(self, n: int, deterministic: bool, seed_base: int, keep_first: bool = False):
        """Returns of `n` fresh eval episodes, played together (and the first one's obs/actions/frames)."""
        eps = play_episodes(self.world, self.agent, self.eval_envs(n), self.cfg.trainer.seq_len - 1,
                            [seed_base + i for i in range(n)], deterministic, keep_first=keep_first)
        return [e["return"] for e in eps], eps[0]

    def eval_envs(self, n: int) -> list:
        """n evaluation envs (built once, reset with each episode's own seed)."""
        if not hasattr(self, "_eval_envs"):
            self._eval_envs = []
        while len(self._eval_envs) < n:
            self._eval_envs.append(build_env(self.cfg, self.cfg.seed + 10_000 + len(self._eval_envs)))
        return self._eval_envs[:n]

    def evaluate(self) -> dict:
        t = self.cfg.trainer
        n = t.eval_episodes
        t0 = time.perf_counter()
        rng = torch.get_rng_state()                  # evaluation must not shift training's RNG
        self.world.eval()
        smp, first = self.run_episodes(n, False, 20_000_000 + self.step, keep_first=not t.eval_deterministic)
        if t.eval_deterministic:
            det, first = self.run_episodes(n, True, 10_000_000 + self.step, keep_first=True)
        imagined = self._imagined_frames(first) if t.video_every_eval else []
        self.world.train()
        torch.set_rng_state(rng)
        row = {"step": self.step, "seconds": round(self.wall, 2),
               "eval/return_sampled": float(np.mean(smp)), "eval/return_sampled_std": float(np.std(smp))}
        if t.eval_deterministic:
            row.update({"eval/return": float(np.mean(det)), "eval/return_std": float(np.std(det))})
        self.seconds["eval"] += time.perf_counter() - t0
        row.update({f"time/{k}": round(v, 2) for k, v in self.seconds.items()})
        self.eval_history.append(row)
        self._log({k: v for k, v in row.items() if k.startswith("eval/")})
        score = max(row.get("eval/return", -math.inf), row["eval/return_sampled"])
        if score > self.best:
            self.best = score
            self.save(os.path.join(self.ckpt_dir, "best.pt"))
        self._plot_curves()
        if self.cfg.trainer.video_every_eval and first["frames"]:
            self._log_video("eval/real_episode", first["frames"])
        if imagined:
            self._log_video("eval/imagined_rollout", imagined)
        return row

    def _imagined_frames(self, episode: dict) -> list:
        """Decoded frames of a rollout imagined from the first steps of a real eval episode."""
        from quatrix_world.imagine import render_imagination
        key = next((k for k, d in self.obs_desc.items() if d["kind"] == "image"), None)
        if key is None or not episode["actions"]:
            return []
        k = min(self.cfg.agent.context_len, len(episode["actions"]))
        state = self.world.observe(episode_batch(episode, k, self.world), sample=False)
        return [f[0] for f in render_imagination(self.world, state, self.agent.actor, self.cfg.agent.horizon, key)]

    # ------------------------------------------------------------------ logging

    def _progress(self):
        if not self.cfg.trainer.progress or self.quiet:
            return None
        from tqdm import tqdm
        return tqdm(total=self.cfg.trainer.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                    desc=self.cfg.env.id)

    @property
    def tb(self):
        if self._tb is None:
            from torch.utils.tensorboard import SummaryWriter
            self._tb = SummaryWriter(self.run_dir, purge_step=self.step if self.step else None)
        return self._tb

    def _log(self, metrics: dict) -> None:
        if not metrics or not self.is_main:
            return
        is_train = any(k.startswith("loss/") for k in metrics)
        if is_train and self.updates % max(1, int(self.cfg.trainer.log_every * self.cfg.trainer.replay_ratio)) != 0:
            return
        new = not os.path.exists(self.metrics_path)
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "seconds", "name", "value"])
            for k, v in metrics.items():
                w.writerow([self.step, f"{self.wall:.2f}", k, f"{float(v):.6g}"])
                self.tb.add_scalar(k, float(v), self.step)

    def _truncate_metrics(self) -> None:
        """After a resume, drop rows logged after the checkpoint: they are about to be redone."""
        if not os.path.exists(self.metrics_path):
            return
        with open(self.metrics_path) as f:
            rows = list(csv.reader(f))
        keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= self.step]
        if len(keep) != len(rows):
            tmp = self.metrics_path + ".tmp"
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(keep)
            os.replace(tmp, self.metrics_path)

    def _plot_curves(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        h = self.eval_history
        steps = [r["step"] for r in h]
        secs = [r["seconds"] for r in h]
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        for key, label in (("eval/return", "deterministic"), ("eval/return_sampled", "sampled")):
            if all(key in r for r in h):
                ax[0].plot(steps, [r[key] for r in h], marker="o", label=label)
                ax[1].plot(secs, [r[key] for r in h], marker="o", label=label)
        ax[0].set_xlabel("env steps")
        ax[1].set_xlabel("wall-clock seconds")
        for a in ax:
            a.set_ylabel("eval return")
            a.grid(alpha=0.3)
            a.legend()
        fig.suptitle(f"{self.cfg.env.id} — {self.cfg.agent.kind}")
        fig.tight_layout()
        tmp = os.path.join(self.run_dir, ".curves.tmp.png")
        fig.savefig(tmp, dpi=80)
        plt.close(fig)
        os.replace(tmp, os.path.join(self.run_dir, "curves.png"))

    def _log_video(self, tag: str, frames) -> None:
        from .tb_video import add_gif
        add_gif(self.tb, tag, frames, self.step)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        return {
            "world": self.world.state_dict(), "agent": self.agent.state_dict(),
            "world_opt": self.world_opt.state_dict(), "agent_extra": self.agent.extra_state(),
            "replay": self.replay.state_dict(),
            "counters": {"step": self.step, "updates": self.updates, "episodes": self.episodes,
                         "wall": self.wall, "best": self.best, "nonfinite": self.nonfinite,
                         "seconds": json.dumps(self.seconds)},
            "episode": {"actions": torch.stack(self.ep_actions) if self.ep_actions else torch.zeros(0)},
            "eval_history": json.dumps(self.eval_history),
            "rng": rng_state(), "gen": self.gen.get_state(),
        }

    def save(self, path: str) -> None:
        if not self.is_main:
            return
        save_checkpoint(path, config_yaml=to_yaml(self.cfg), spec=self.world.spec_dict(), state=self.state())

    def load(self, path: str) -> None:
        ck = load_checkpoint(path)
        check_compatible(ck, self.cfg, self.world.spec_dict())
        self.world.load_state_dict(ck["world"])
        self.agent.load_state_dict(ck["agent"])
        self.world_opt.load_state_dict(ck["world_opt"])
        self.agent.load_extra_state(ck["agent_extra"])
        self.replay.load_state_dict(ck["replay"])
        c = ck["counters"]
        self.step, self.updates, self.episodes = c["step"], c["updates"], c["episodes"]
        self.wall, self.best, self.nonfinite = c["wall"], c["best"], c["nonfinite"]
        if "seconds" in c:
            self.seconds.update(json.loads(c["seconds"]))
        acts = ck["episode"]["actions"]
        self.ep_actions = [a for a in acts] if acts.numel() else []
        self.eval_history = json.loads(ck["eval_history"])
        set_rng_state(ck["rng"])
        self.gen.set_state(ck["gen"])


def check_compatible(ck: dict, cfg: Config, spec: dict) -> None:
    """A checkpoint must match the env's spaces and the model config; name the first difference."""
    diff = first_difference(ck["spec"], spec)
    if diff:
        raise CheckpointError(f"checkpoint {ck['path']} was made for a different observation/action space "
                              f"(field '{diff}' differs) — use the env it was trained on")
    saved = config_from_yaml_text(ck["config"])
    from quatrix_world.config import to_dict
    for section in ("world", "agent"):
        d = first_difference(to_dict(getattr(saved, section)), to_dict(getattr(cfg, section)), section + ".")
        if d and not d.startswith(("agent.lr", "agent.critic_lr", "agent.entropy")):
            raise CheckpointError(f"checkpoint {ck['path']} has a different model config: '{d}' differs — "
                                  "load it with the config it was trained with (its run's config.yaml)")


@torch.no_grad()
def play_episode(world, agent, env, window: int, seed: int, deterministic: bool = False,
                 max_steps: int | None = None, keep: bool = False) -> dict:
    """One real episode with the agent acting through the world model -> return (and, with
    keep=True, its observations, actions and frames)."""
    return play_episodes(world, agent, [env], window, [seed], deterministic, max_steps, keep_first=keep)[0]


@torch.no_grad()
def play_episodes(world, agent, envs: list, window: int, seeds: list[int], deterministic: bool = False,
                  max_steps: int | None = None, keep_first: bool = False) -> list[dict]:
    """Episode i on envs[i] reset with seeds[i], all stepped in lockstep -> one dict per episode.

    The policy is OnlinePolicy's (z = posterior mode, h from one cached core step per env step,
    `QuatrixWorld.observe_step`), batched: one encode, one cached core step and one policy call per
    step for every episode still running, so n episodes cost about the model time of one. Episodes that
    end drop out of the batch. keep_first keeps episode 0's observations and frames (for videos).
    """
    from torchrl.envs.utils import step_mdp
    n = len(envs)
    if len(seeds) != n:
        raise ValueError(f"play_episodes needs one seed per env, got {len(seeds)} seeds for {n} envs")
    tds = []
    for env, seed in zip(envs, seeds):
        env.set_seed(seed)
        tds.append(env.reset())
    outs = [{"obs": [], "actions": [], "rewards": [], "frames": []} for _ in range(n)]
    dev = world.device
    state = world.acting_state(n, window)
    running, prev = list(range(n)), None            # prev: the running episodes' last actions [m, ...]
    steps = 0
    while running and (max_steps is None or steps < max_steps):
        obs = {k: torch.stack([tds[i][k] for i in running]) for k in world.obs_desc}     # [m, ...]
        if keep_first and running[0] == 0:
            first = {k: v[0] for k, v in obs.items()}
            outs[0]["obs"].append(first)
            frame = frame_of(envs[0], first, world.obs_desc)
            if frame is not None:
                outs[0]["frames"].append(frame)
        feat = world.observe_step(state, {k: v.to(dev) for k, v in obs.items()}, prev)  # [m, F]
        a = agent.act(feat, deterministic)                                               # [m] or [m, d]
        a_host = a.cpu()
        still = []
        for j, i in enumerate(running):
            env, td = envs[i], tds[i]
            td["action"] = a_host[j].to(env.action_spec.dtype).reshape(env.action_spec.shape)
            td = env.step(td)
            outs[i]["actions"].append(a_host[j].clone())
            outs[i]["rewards"].append(float(td["next", "reward"]))
            if not bool(td["next", "done"]):
                still.append(j)
            tds[i] = step_mdp(td, exclude_action=True)
        if len(still) < len(running):
            keep = torch.tensor(still, dtype=torch.long, device=dev)
            state = world.select_rows(state, keep)
            a = a[keep]
        running = [running[j] for j in still]
        prev = a
        steps += 1
    for out in outs:
        out["return"] = float(sum(out["rewards"]))
    return outs


def episode_batch(ep: dict, upto: int, world) -> TensorDict:
    """The first `upto` steps of a kept episode as a [1, upto] TensorDict for world.observe."""
    data = {k: torch.stack([o[k] for o in ep["obs"][:upto]])[None] for k in world.obs_desc}
    data["action"] = torch.stack(ep["actions"][:upto])[None]
    is_init = torch.zeros(1, upto, 1, dtype=torch.bool)
    is_init[0, 0] = True
    data["is_init"] = is_init
    return TensorDict(data, batch_size=[1, upto])


def frame_of(env, obs: dict, desc: dict):
    """An RGB frame for videos: the image observation, else env.render(), else None."""
    for k, d in desc.items():
        if d["kind"] == "image":
            return obs[k].cpu().numpy()
    try:
        return render_frame(env)
    except Exception:           # vector-only env without an rgb_array renderer: no video
        return None


