"""The training loop: collect real steps, train the world model, train the agent in imagination.

Read top to bottom: `Trainer.__init__` builds everything from the config, `Trainer.train` is the
loop (CleanRL style), `train_step` owns every optimiser step, and the rest are evaluation and
checkpoints. The pieces live beside it: acting (policy.py), the env side (collect.py), evaluation
(evaluate.py), files (logger.py), seeds (seeding.py).

Exact resume: a checkpoint holds weights, optimisers, the replay buffer, every RNG state, the step
and update counters, and the current episode's reset seed and actions (collect.py), so a resumed
run continues exactly where the straight run would be.
"""
from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
import warnings

import torch
import torch.nn as nn

from envs import EpisodeReplay, LaneReplay
from quatrix_world.checkpoint import (CheckpointError, check_compatible, load_checkpoint, load_weights,
                                      save_checkpoint)
from quatrix_world.config import Config, to_yaml
from quatrix_world.errors import QuatrixError
from quatrix_world.features import LatentFeatures, latent_index
from quatrix_world.world import QuatrixWorld

from . import build_agent, distributed, rundir
from .collect import Collector, EnvStepError, build_env, env_specs
from .device import autocast, check_compile, compile_update, cpu_threads, mark_step, resolve_device, resolve_precision
from .evaluate import Evaluator
from .logger import RunLogger
from .seeding import rng_state, seed_everything, set_rng_state


class TrainingError(QuatrixError, RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite); the last good checkpoint is kept."""


class Trainer:
    """`Trainer(cfg, run_dir).train()`. A folder that already holds a run is refused unless
    `resume=True` (continue it from checkpoints/latest.pt) or `force=True` (replace it); one process
    at a time may train in a folder (agents/rundir.py)."""

    def __init__(self, cfg: Config, run_dir: str, resume: bool = False, quiet: bool = False, force: bool = False,
                 fresh_episode: bool = False):
        self.cfg, self.run_dir, self.quiet = cfg, run_dir, quiet
        self.fresh_episode = fresh_episode    # on resume: start a new episode instead of replaying the interrupted one
        self.device = resolve_device(cfg.run.device)
        self.amp_dtype = resolve_precision(cfg.run.precision, self.device)
        self.act_threads, self.update_threads = cpu_threads(cfg.run.threads), cpu_threads(cfg.run.update_threads)
        check_compile(cfg.run.cudagraphs, self.device)
        self._compiled = {}                      # run.compile: the compiled loss functions, built on first use
        torch.set_num_threads(self.act_threads)
        self.rank, self.world_size = distributed.setup(self.device.type)
        self.is_main = self.rank == 0
        self.lock = rundir.claim(run_dir, resume, force) if self.is_main else None   # before anything is written
        try:
            self._build(resume)
        except BaseException:
            self.close()
            raise

    def _build(self, resume: bool) -> None:
        cfg, t, run_dir = self.cfg, self.cfg.trainer, self.run_dir
        self.logger = None
        seed = cfg.seed + 7919 * self.rank                  # each rank its own data
        seed_everything(cfg.seed)
        self.env = build_env(cfg, seed, t.num_envs)
        self.obs_desc, self.act_desc = env_specs(self.env)
        self.world = QuatrixWorld(cfg.world, self.obs_desc, self.act_desc).to(self.device)
        self.agent = build_agent(cfg.agent, self.world.feat_dim, self.world.act_desc,
                                 self.world.latent_shape).to(self.device)
        if self.world_size > 1:           # same weights everywhere, different data per rank
            distributed.broadcast_module(self.world)
            distributed.broadcast_module(self.agent)
            seed_everything(seed)
        self.world_opt = torch.optim.Adam(self.world.parameters(), lr=t.world_lr, eps=1e-8)
        replay_kw = dict(storage=t.replay_storage, seed=seed, reward_windows=t.reward_windows,
                         scratch_dir=os.path.join(run_dir, "replay")
                         if t.replay_storage == "disk" and self.is_main else None)   # others: private tmp
        if t.num_envs == 1:
            self.replay = EpisodeReplay(t.replay_capacity, t.seq_len, t.batch_size, **replay_kw)
        else:             # a batched env: one replay stream per lane
            self.replay = LaneReplay(t.num_envs, t.replay_capacity, t.seq_len, t.batch_size, **replay_kw)
        self.gen = torch.Generator().manual_seed(seed + 1)  # prefill actions and imagination starts
        self.seconds = {k: 0.0 for k in ("act", "env", "world", "agent", "eval")}   # where the time goes
        self.collector = Collector(self.env, t.num_envs, self.world, self.agent, self.replay,
                                   window=t.seq_len - 1, seed=seed, gen=self.gen, seconds=self.seconds)
        self.actor = self.collector.actor
        self._stopping = threading.Event()     # Ctrl-C / SIGTERM / request_stop(); no reference back to self
        self._signal = None                    # the signal that asked to stop (SIGINT when none did)
        self._bar = None                       # the progress bar, while train() runs
        self.evaluator = Evaluator(cfg, stop=self._stopping.is_set)   # it stops an evaluation too
        # counters (all restored on resume; env steps and episodes are the collector's)
        self.updates = 0           # gradient steps taken
        self.wall = 0.0            # training seconds before this process
        self.best = -math.inf
        self.nonfinite = 0
        self.eval_history: list[dict] = []
        self.last_update: dict = {}                      # the metrics of the latest update
        self.ckpt_dir = os.path.join(run_dir, "checkpoints")
        if resume:
            self.resume()
        self.logger = RunLogger(run_dir, purge_after=self.step)
        if self.is_main:                  # rank 0 alone writes files
            os.makedirs(self.ckpt_dir, exist_ok=True)
            if not resume:
                with open(os.path.join(run_dir, "config.yaml"), "w") as f:
                    f.write(to_yaml(cfg))
            self.logger.truncate(self.step)

    @property
    def step(self) -> int:
        """Env steps taken (all lanes)."""
        return self.collector.steps

    # ------------------------------------------------------------------ the loop

    def train(self) -> dict:
        t = self.cfg.trainer
        if self.is_main and self.lock is None:           # a second train() on this Trainer: take the folder again
            self.lock = rundir.claim(self.run_dir, resume=True)
        start_wall = time.time() - self.wall
        self.start_collection(replay_actions=None if self.fresh_episode else self.collector.ep_actions)
        self.fresh_episode = False
        bar = None
        if t.progress and not self.quiet:
            bar = self.logger.progress(t.total_steps, self.step, self.cfg.env.id)
        self._bar = bar
        interrupted = False
        self._stopping.clear()
        self._signal = None
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.step < t.total_steps:
                if self._stopping.is_set():  # Ctrl-C / SIGTERM: stop at a step boundary, consistent state
                    raise KeyboardInterrupt
                # 1. act in the real env: one step, or one step in each of num_envs lanes
                before = self.step
                finished = self.collect_step()
                # 2. keep the replay ratio: updates_due = (steps since prefill) x ratio
                if self.step >= t.prefill and self.replay.ready():
                    due = int((self.step - t.prefill + 1) * t.replay_ratio)
                    while self.updates < due:
                        self.last_update = self.train_step()
                        self.log(self.last_update)
                for ret, length in finished:
                    self.log({"train/episode_return": ret, "train/episode_length": length})
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
                if due_at(t.checkpoint_every) and self.nonfinite == 0:   # never over the last good one
                    self.save(os.path.join(self.ckpt_dir, "latest.pt"))
                if bar is not None:
                    bar.update(self.step - before)
        except EnvStepError as e:
            self.save(os.path.join(self.ckpt_dir, "latest.pt"))      # the collector is at the last step boundary
            raise TrainingError(
                f"{e} — checkpoint at the last step written to {self.ckpt_dir}/latest.pt; fix the env and continue "
                f"with --resume {self.run_dir} (--fresh-episode if it cannot replay the interrupted episode)") from e
        except KeyboardInterrupt:
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_DFL)     # a second Ctrl-C kills at once
            self.save(os.path.join(self.ckpt_dir, "latest.pt"))
            if bar is not None:
                bar.close()
            if self.is_main:
                name = signal.Signals(self._signal or signal.SIGINT).name
                print(f"interrupted by {name} at step {self.step} of {t.total_steps}: checkpoint written to "
                      f"{self.ckpt_dir}/latest.pt (continue with --resume {self.run_dir})", flush=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bar is not None:
                bar.close()
            self._bar = None
            if self.is_main and self.logger is not None:
                self.logger.maybe_curves(self._title(), force=True)
            if self.world_size > 1 and not interrupted:
                diff = distributed.max_param_difference(self.world) + distributed.max_param_difference(self.agent)
                self.log({"dist/max_param_diff": diff})
                if self.is_main:
                    print(f"data parallel: {self.world_size} ranks, max weight difference across ranks {diff:.3g}")
            self.close()
        summary = {"step": self.step, "updates": self.updates, "episodes": self.collector.episodes,
                   "best_eval_return": self.best, "wall_seconds": self.wall, "interrupted": interrupted,
                   "signal": int(self._signal or signal.SIGINT) if interrupted else None}
        if self.eval_history:
            summary["last_eval"] = self.eval_history[-1]
        return summary

    def close(self) -> None:
        """Close the event files and let go of the run folder (train() does this when it returns)."""
        if self.logger is not None:
            self.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def close_envs(self) -> None:
        """Close the training and evaluation envs (worker processes of a parallel env exit with them);
        the Trainer cannot collect afterwards. The CLI and `agents.train` call it once training is done."""
        for env in [self.env, *self.evaluator.envs]:
            env.close(raise_if_closed=False)
        self.evaluator.envs = []

    def request_stop(self) -> None:
        """Stop at the next step boundary with a checkpoint, as Ctrl-C does."""
        self._stopping.set()

    def _on_signal(self, signum, frame) -> None:
        """SIGINT/SIGTERM: finish the current step, write a checkpoint, exit cleanly."""
        self._signal = signum
        if self._stopping.is_set():       # asked twice: stop now (still with a checkpoint)
            raise KeyboardInterrupt
        self._stopping.set()

    def start_collection(self, replay_actions=None) -> None:
        """Fresh episode(s) to collect from (on resume, the interrupted episode replayed)."""
        self.collector.start(replay_actions)

    def collect_step(self) -> list:
        """One env step (one in each lane with num_envs > 1) -> [(return, length)] of finished episodes.
        Random actions during the prefill, the agent's afterwards, except that with probability
        `trainer.random_actions` a step (all lanes of it) still acts at random: exploration in the
        real env only — imagination and evaluation use the policy alone."""
        t = self.cfg.trainer
        random = self.step < t.prefill
        if not random and t.random_actions > 0:
            random = bool(torch.rand((), generator=self.gen) < t.random_actions)
        return self.collector.step(random=random)

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
        mark_step(cfg.run.cudagraphs)
        batch = self.replay.sample()                                   # [B, T], on the host
        if self.device.type != "cpu":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        # 1. the world model on a replay batch
        self.world.train()
        t0 = time.perf_counter()
        with autocast(self.device, self.amp_dtype):
            loss, metrics, aux = self.compiled("world", self.world.loss)(batch)
        aux = {k: v.float() for k, v in aux.items()}
        gnorms, failed = self._optimize({"world model": (loss, self.world_opt, self.world)},
                                        cfg.trainer.world_grad_clip)
        if failed:
            return self._skip_update(failed, metrics)
        metrics["world/grad_norm"] = gnorms["world model"]
        t1 = time.perf_counter()
        self.seconds["world"] += t1 - t0

        # 2. the agent in imagination, from start states inside the same batch
        replay_critic = cfg.agent.replay_critic > 0                    # the critic also learns on the real rows
        d = self.world.unpack(batch, need_targets=replay_critic)
        state = self.start_states(aux["z"], d)
        rollout = self.agent.rollout(self.world, state)                # no gradient
        if replay_critic:
            rollout["replay"] = self.replay_rows(d, aux)
        for epoch in range(self.agent.epochs):
            losses, agent_metrics = self.compiled("agent", self.agent.losses)(rollout, epoch)  # {"loss_actor": ...}
            terms = {}
            for key, term in losses.items():
                name = key.removeprefix("loss_")                      # "actor", "critic"
                terms[f"agent {name}"] = (term, *self.agent.optimizers[name])
                metrics[f"loss/{name}"] = term.detach()
            gnorms, failed = self._optimize(terms, cfg.agent.grad_clip)
            if failed:
                return self._skip_update(failed, agent_metrics)
            for what, gnorm in gnorms.items():
                metrics[f"agent/{what.removeprefix('agent ')}_gnorm"] = gnorm
            metrics.update(agent_metrics)
        self.agent.after_update()
        self.seconds["agent"] += time.perf_counter() - t1
        self.nonfinite = 0
        self.updates += 1
        metrics["train/updates"] = self.updates
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(self.device).reshape(())
                              for v in metrics.values()]).tolist()          # one host sync for all
        return dict(zip(metrics, values))

    def compiled(self, name: str, fn):
        """`fn` as the run computes it: itself, or (run.compile) compiled once on first use."""
        if not self.cfg.run.compile:
            return fn
        if name not in self._compiled:
            self._compiled[name] = compile_update(fn, self.cfg.run.cudagraphs)
        return self._compiled[name]

    def _optimize(self, terms: dict, clip: float) -> tuple[dict, str | None]:
        """terms {what: (loss, optimiser, module)} -> ({what: gradient norm}, None) after one backward
        of their sum, gradients averaged across ranks, each module clipped and each optimiser stepped.
        The modules share no parameters, so each gets its own loss's gradient. When a loss or a
        gradient is not finite: ({}, what), and no weight or optimiser has moved."""
        for _, opt, _ in terms.values():
            opt.zero_grad(set_to_none=True)
        finite = torch.stack([torch.isfinite(loss) for loss, _, _ in terms.values()]).tolist()   # one host sync
        for what, ok in zip(terms, finite):
            if not distributed.all_ranks_agree(ok):
                return {}, what
        sum(loss for loss, _, _ in terms.values()).backward()
        gnorms = {}
        for what, (_, _, module) in terms.items():
            distributed.average_gradients(module.parameters())
            gnorms[what] = nn.utils.clip_grad_norm_(module.parameters(), clip)
        finite = torch.stack(list(gnorms.values())).isfinite().tolist()
        for what, ok in zip(terms, finite):
            if not distributed.all_ranks_agree(ok):
                for _, opt, _ in terms.values():
                    opt.zero_grad(set_to_none=True)
                return {}, what
        for _, opt, _ in terms.values():
            opt.step()
        return gnorms, None

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

    def replay_rows(self, d: dict, aux: dict) -> dict:
        """The replay batch [B, T] (its unpacked rows `d`) as the critic's real rows
        (`agent.replay_critic`): features [z_t, h_{t-1}] from the world model's update (z by index
        where the agent reads it so), with their rewards, terminations and which rows continue into
        the next one."""
        h = self.world.h_prev(aux["h"], d["is_init"])                              # [B, T, H]
        if self.agent.actor.reads_latent_index:
            feat = LatentFeatures(latent_index(aux["z"], self.world.latent_shape[0]), h)
        else:
            feat = self.world.features(aux["z"], h)
        next_valid = torch.cat([~d["is_init"][:, 1:], torch.zeros_like(d["is_init"][:, :1])], 1)
        return self.agent.replay_targets(feat, d["reward"], d["terminated"], next_valid)

    def start_states(self, z: torch.Tensor, d: dict) -> dict:
        """Imagination starts: windows of `context_len` real steps ending at random positions of the
        batch (z [B, T, Z] its posterior samples, d its unpacked rows)."""
        a = self.cfg.agent
        B, T = z.shape[:2]
        K = min(a.context_len, T)
        per_seq = max(1, a.starts // B)
        ends = torch.randint(K - 1, T, (B, per_seq), generator=self.gen).to(z.device)  # [B, M]
        idx = (ends[..., None] - torch.arange(K - 1, -1, -1, device=z.device))          # [B, M, K]
        b = torch.arange(B, device=z.device)[:, None, None].expand_as(idx)
        gather = lambda x: x[b, idx].flatten(0, 1)
        return self.world.observe_latents(gather(z), gather(d["action"]), gather(d["is_init"]))

    # ------------------------------------------------------------------ evaluation and logging

    def evaluate(self) -> dict:
        """Score the agent on fresh episodes; log, plot, keep the best checkpoint."""
        t0 = time.perf_counter()
        scores, first, imagined = self.evaluator(self.world, self.agent, self.step)
        row = {"step": self.step, "seconds": round(self.wall, 2), **scores}
        # the policy's entropy at the latest update: a collapse shows beside the score it preceded
        row.update({"train/" + k.removeprefix("agent/"): round(v, 5) for k, v in self.last_update.items()
                    if k in ("agent/entropy", "agent/entropy_scale")})
        self.seconds["eval"] += time.perf_counter() - t0
        row.update({f"time/{k}": round(v, 2) for k, v in self.seconds.items()})
        self.eval_history.append(row)
        self.log(scores)
        score = max(row.get("eval/return", -math.inf), row["eval/return_sampled"])
        best = score > self.best
        if best:
            self.best = score
            self.save(os.path.join(self.ckpt_dir, "best.pt"))
        if self.is_main:
            self.logger.maybe_curves(self._title())       # throttled as any row; the run's end always redraws
            if not self.quiet:
                self._say(self.eval_line(row, best))
            if self.cfg.trainer.video_every_eval and first["frames"]:
                self.logger.video("eval/real_episode", first["frames"], self.step)
            if imagined:
                self.logger.video("eval/imagined_rollout", imagined, self.step)
        return row

    def eval_line(self, row: dict, best: bool) -> str:
        """One line per evaluation: the sampled score (the policy as trained), the deterministic one."""
        n = self.cfg.trainer.eval_episodes
        parts = [f"sampled {row['eval/return_sampled']:.3f} ± {row['eval/return_sampled_std']:.3f}"]
        if "eval/return" in row:
            parts.append(f"deterministic {row['eval/return']:.3f} ± {row['eval/return_std']:.3f}")
        return (f"eval at step {self.step:,}: return {', '.join(parts)} over {n} episodes each"
                f"{' (best so far)' if best else ''} [{self.wall:.0f} s]")

    def _say(self, line: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line, flush=True)

    def _title(self) -> str:
        return f"{self.cfg.env.id} — {self.cfg.agent.kind}, seed {self.cfg.seed}"

    def log(self, metrics: dict) -> None:
        """Scalars to metrics.csv and TensorBoard (training losses every `trainer.log_every` steps)."""
        if not metrics or not self.is_main:
            return
        t = self.cfg.trainer
        if any(k.startswith("loss/") for k in metrics) and self.updates % max(1, int(t.log_every * t.replay_ratio)):
            return
        self.logger.scalars(metrics, self.step, self.wall)
        self.logger.maybe_curves(self._title())         # from the first row on, then every 30 s at most

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        c = self.collector
        return {
            "world": self.world.state_dict(), "agent": self.agent.state_dict(),
            "world_opt": self.world_opt.state_dict(), "agent_extra": self.agent.extra_state(),
            "replay": self.replay.state_dict(),
            "counters": {"step": c.steps, "updates": self.updates, "episodes": c.episodes,
                         "wall": self.wall, "best": self.best, "nonfinite": self.nonfinite,
                         "seconds": json.dumps(self.seconds)},
            "episode": {"actions": torch.stack(c.ep_actions) if c.ep_actions else torch.zeros(0)},
            "eval_history": json.dumps(self.eval_history),
            "rng": rng_state(), "gen": self.gen.get_state(),
        }

    def save(self, path: str) -> None:
        """Write a checkpoint; latest.pt keeps its predecessor as previous.pt."""
        if not self.is_main:
            return
        save_checkpoint(path, config_yaml=to_yaml(self.cfg), spec=self.world.spec_dict(), state=self.state(),
                        keep_previous=os.path.basename(path) == "latest.pt")

    def resume(self) -> None:
        """Load checkpoints/latest.pt, or previous.pt (saying so) when latest.pt is missing or corrupt."""
        latest, previous = (os.path.join(self.ckpt_dir, f) for f in ("latest.pt", "previous.pt"))
        try:
            ck = load_checkpoint(latest)
        except CheckpointError as e:
            if not os.path.isfile(previous):
                raise
            ck = load_checkpoint(previous)
            warnings.warn(f"{e} — resuming from {previous} (step {ck['counters']['step']}) instead")
        self.load(ck)

    def load(self, ck: dict | str) -> None:
        """Restore everything from a checkpoint (a path or a loaded one)."""
        ck = load_checkpoint(ck) if isinstance(ck, str) else ck
        check_compatible(ck, self.cfg, self.world.spec_dict())
        load_weights(self.world, ck["world"], ck["path"])
        load_weights(self.agent, ck["agent"], ck["path"])
        self.world_opt.load_state_dict(ck["world_opt"])
        self.agent.load_extra_state(ck["agent_extra"])
        self.replay.load_state_dict(ck["replay"])
        c, col = ck["counters"], self.collector
        col.steps, self.updates, col.episodes = c["step"], c["updates"], c["episodes"]
        self.wall, self.best, self.nonfinite = c["wall"], c["best"], c["nonfinite"]
        if "seconds" in c:
            self.seconds.update(json.loads(c["seconds"]))
        acts = ck["episode"]["actions"]
        col.ep_actions = [a for a in acts] if acts.numel() else []
        self.eval_history = json.loads(ck["eval_history"])
        set_rng_state(ck["rng"])
        self.gen.set_state(ck["gen"])
