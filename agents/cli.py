"""quatrix-world: train / eval / imagine / record / env-check.

User errors (bad config, env, checkpoint, paths, a full disk) print one line `error: …` on stderr
and exit 2; any other exception is a bug: its traceback, a line asking to report it, exit 1.
"""
from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback
import warnings

from quatrix_world.errors import UsageError

USAGE_EXAMPLES = """examples:
  quatrix-world train --config configs/debug.yaml                  # -> runs/debug-actor_critic-s0
  quatrix-world train --config configs/minigrid_empty.yaml --set agent.kind=grpo   # runs/minigrid_empty-grpo-s0
  quatrix-world eval --checkpoint runs/debug-actor_critic-s0 --episodes 10
  quatrix-world imagine --checkpoint runs/debug-actor_critic-s0 --group 4 --out imagined.gif
  quatrix-world record --checkpoint runs/debug-actor_critic-s0 --side-by-side --out real_vs_imagined.mp4
  quatrix-world env-check CartPole-v1
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' layout and adds each option's default (when it has a meaningful one)."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = (action.option_strings and action.nargs != 0 and action.default is not None
                 and action.default != [] and action.default is not argparse.SUPPRESS)
        if shown and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _version() -> str:
    from quatrix_world import __version__
    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quatrix-world", description="World models and RL agents on the Quatrix "
                                "(Q-Compass) architecture.", epilog=USAGE_EXAMPLES, formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"quatrix-world {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", formatter_class=HelpFormatter, help="train a world model and an agent")
    t.add_argument("--config", action="append", default=[], help="YAML file(s), later ones win; "
                   "configs/default.yaml is always applied first")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    t.add_argument("--run-dir", help="output directory (default: runs/<run.name>, which is "
                   "<config>-<agent.kind>-s<seed> unless you set run.name)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--fresh-episode", action="store_true", help="with --resume: start a new episode instead of "
                   "replaying the interrupted one (for envs that are not deterministic given a seed)")
    t.add_argument("--force", action="store_true", help="replace the run already in the run folder (its "
                   "checkpoints, metrics and events are deleted first)")
    t.add_argument("--dry-run", action="store_true", help="resolve config, build env and model, print, exit")
    t.add_argument("--quiet", action="store_true", help="no progress bar and no evaluation lines (the bar shows "
                   "env steps, ret = the last training episode's return and upd = gradient updates so far)")

    e = sub.add_parser("eval", formatter_class=HelpFormatter, help="evaluate a checkpoint on fresh episodes")
    e.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    e.add_argument("--episodes", type=int, default=10, help="fresh episodes per mode")
    e.add_argument("--mode", choices=["both", "sampled", "deterministic"], default="both",
                   help="sampled actions (the policy as trained, as the benchmark tables score it), the most "
                   "likely action (deterministic), or both")
    e.add_argument("--out", help="where to write eval.json (default: <run>/eval.json)")

    i = sub.add_parser("imagine", formatter_class=HelpFormatter, help="render an imagined rollout from a checkpoint")
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--horizon", type=int, default=None,
                   help="imagined steps (default: trainer.seq_len - context, the longest the model trained on)")
    i.add_argument("--group", type=int, default=1, help="branches from the same start, one row each")
    i.add_argument("--context", type=int, default=4, help="real steps before imagining")
    i.add_argument("--out", required=True, help=".mp4 or .gif: a video; .png: one picture (image observations: "
                   "a grid of branches x steps; vector observations: each dimension and the reward, imagined "
                   "against the real env given the same actions)")
    i.add_argument("--seed", type=int, default=0, help="seed of the real episode that gives the context")
    i.add_argument("--qmap", metavar="FILE.png", help="also save the core's Q-map heatmap for the rollout")

    r = sub.add_parser("record", formatter_class=HelpFormatter, help="record real episodes (optionally beside open-loop imagination)")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--episodes", type=int, default=1, help="episodes to record, one after the other")
    r.add_argument("--out", required=True, help=".mp4 or .gif")
    r.add_argument("--side-by-side", action="store_true", help="columns real | imagined (open loop, the same "
                   "actions) | |error|, up to the trained horizon")
    r.add_argument("--context", type=int, default=4, help="real steps the model sees before it imagines "
                   "(with --side-by-side)")
    r.add_argument("--seed", type=int, default=0, help="seed of the first episode (the next ones count up)")

    c = sub.add_parser("env-check", formatter_class=HelpFormatter, help="check that an environment can be trained on")
    c.add_argument("spec", help="gymnasium id or package.module:Name")
    return p


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise UsageError(f"--{name} must be > 0, got {value} — pass a positive number, e.g. --{name} 1")


def _out_path(path: str, kinds=(".mp4", ".gif")) -> str:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UsageError(f"output directory '{d}' does not exist — create it first or choose another --out")
    if not path.lower().endswith(kinds):
        raise UsageError(f"--out must end in {' or '.join(kinds)}, got '{path}'")
    return path


def cmd_train(args) -> int:
    from quatrix_world.config import load_config, read_yaml, apply_override, parse_override, \
        from_dict, validate, ConfigError, default_run_dir
    if args.fresh_episode and not args.resume:
        raise UsageError("--fresh-episode goes with --resume (a new run always starts fresh episodes)")
    if args.resume:
        run_dir = args.resume
        cfg_path = os.path.join(run_dir, "config.yaml")
        ckpts = [os.path.join(run_dir, "checkpoints", f) for f in ("latest.pt", "previous.pt")]
        if not any(os.path.isfile(c) for c in ckpts) or not os.path.isfile(cfg_path):
            raise ConfigError(f"--resume '{run_dir}' is not a run directory with a checkpoint "
                              "(needs config.yaml and checkpoints/latest.pt) — start a run with train --config")
        data = read_yaml(cfg_path)
        for item in args.set:
            data = apply_override(data, *parse_override(item))
        cfg = validate(from_dict(data))
    else:
        cfg = load_config(["default.yaml"] + args.config, args.set)
        run_dir = args.run_dir or default_run_dir(cfg, args.config)
    from .device import resolve_device
    resolve_device(cfg.run.device)       # a missing GPU is an error before anything is built or written
    if args.dry_run:
        return _dry_run(cfg, run_dir)
    from .trainer import Trainer
    if int(os.environ.get("RANK", "0")) == 0:
        os.makedirs(run_dir, exist_ok=True)
    trainer = Trainer(cfg, run_dir, resume=bool(args.resume), quiet=args.quiet, force=args.force,
                      fresh_episode=args.fresh_episode)
    try:
        summary = trainer.train()
    finally:
        trainer.close_envs()         # a parallel env's workers must not outlive the run
    if not trainer.is_main:          # data parallel: rank 0 reports for all (other ranks do not evaluate)
        return 0
    if summary["interrupted"]:       # the trainer said where the checkpoint is and how to continue
        return 128 + summary["signal"]          # 130 for SIGINT (Ctrl-C), 143 for SIGTERM
    last = summary.get("last_eval", {})
    scores = [f"{name} {last[key]:.3f}" for name, key in (("sampled", "eval/return_sampled"),
                                                          ("deterministic", "eval/return")) if key in last]
    print(f"done: {summary['step']} env steps, {summary['updates']} updates, "
          f"{'last eval return ' + ', '.join(scores) if scores else 'not evaluated'}, "
          f"{summary['wall_seconds']:.0f}s — run in {run_dir}")
    return 0


def _dry_run(cfg, run_dir: str) -> int:
    from quatrix_world.config import to_yaml
    from quatrix_world.world import QuatrixWorld
    from . import build_agent
    from .collect import build_env, env_specs
    env = build_env(cfg, cfg.seed)
    obs, act = env_specs(env)
    world = QuatrixWorld(cfg.world, obs, act)
    agent = build_agent(cfg.agent, world.feat_dim, world.act_desc, world.latent_shape)
    print(to_yaml(cfg))
    print(f"run directory: {run_dir}")
    for k, d in obs.items():
        print(f"observation {k}: {d['kind']} {d['shape']} {d['dtype']}")
    print(f"action: {act}")
    n = lambda m: sum(p.numel() for p in m.parameters())
    print(f"parameters: world model {n(world):,} (core {n(world.core):,}, encoders {n(world.encoders):,}, "
          f"decoders {n(world.decoders):,}); agent {n(agent.actor) + n(agent.critic):,}")
    return 0


def cmd_eval(args) -> int:
    from quatrix_world.files import write_json
    from .rollout import LoadedRun, evaluate
    _positive("episodes", args.episodes)
    run = LoadedRun(args.checkpoint)
    out = args.out or os.path.join(run.run_dir, "eval.json")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UsageError(f"output directory for '{out}' does not exist — create it first")
    modes = ["sampled", "deterministic"] if args.mode == "both" else [args.mode]
    result = {"checkpoint": run.path, "env": run.cfg.env.id, "step": run.step}
    with _progress(args.episodes * len(modes), "episodes") as bar:
        for mode in modes:
            result[mode] = evaluate(run, args.episodes, deterministic=mode == "deterministic",
                                    progress=bar.update)
    write_json(result, out)
    for mode in modes:
        r = result[mode]
        what = "sampled actions (the policy as trained)" if mode == "sampled" else "the most likely action"
        print(f"{result['env']} step {result['step']}, {what}: return {r['mean_return']:.3f} ± "
              f"{r['std_return']:.3f} over {args.episodes} episodes")
    print(f"-> {out}")
    return 0


def _progress(total: int, unit: str):
    """A tqdm bar on stderr (shown when stderr is a terminal, so logs and pipes stay clean)."""
    from tqdm import tqdm
    return tqdm(total=total, unit=unit, dynamic_ncols=True, leave=False, disable=None)


def cmd_imagine(args) -> int:
    from .rollout import LoadedRun, cut_reason, imagine_frames, imagine_picture, imagine_vectors, trained_horizon
    if args.horizon is not None:
        _positive("horizon", args.horizon)
    _positive("group", args.group)
    _positive("context", args.context)
    out = _out_path(args.out, (".mp4", ".gif", ".png"))
    run = LoadedRun(args.checkpoint)
    trained = run.cfg.trainer.seq_len                 # positions past it were never trained
    if args.context >= trained:
        raise UsageError(f"--context must be < {trained}, the trainer.seq_len this model trained on — use "
                         f"--context {trained - 1} or less")
    if args.horizon is None:
        args.horizon = trained_horizon(run, args.context)
    if args.context + args.horizon > trained:
        raise UsageError(f"--context + --horizon ({args.context}+{args.horizon}) must be <= {trained}, the "
                         f"trainer.seq_len this model trained on — use --horizon {trained_horizon(run, args.context)} "
                         "or less")
    images = any(d["kind"] == "image" for d in run.world.obs_desc.values())
    cut = cut_reason(run, args.context, args.horizon)
    if not images and not out.lower().endswith(".png"):
        raise UsageError(f"{run.cfg.env.id} has no image observation to make a video of — write a plot of the "
                         "imagined observations instead: --out imagined.png")
    if not images:
        info = imagine_vectors(run, args.horizon, out, args.group, args.context, args.seed)
        print(f"imagined {args.group} x {args.horizon} steps after {args.context} real ones (stopped at {cut}); "
              f"the real env replayed the same actions for {', '.join(map(str, info['real_steps']))} steps -> {out}")
    elif out.lower().endswith(".png"):
        from envs.video import write_png
        write_png(imagine_picture(run, args.horizon, args.group, args.context, args.seed), out)
        print(f"imagined {args.group} x {args.horizon} steps after {args.context} real ones (stopped at {cut}) "
              f"-> {out}")
    else:
        from envs import write_video
        with _progress(args.horizon, "step") as bar:
            frames, traj = imagine_frames(run, args.horizon, args.group, args.context, args.seed,
                                          progress=bar.update)
        write_video(frames, out, fps=4)
        print(f"imagined {args.group} x {args.horizon} steps after {args.context} real ones (stopped at {cut}; "
              f"predicted return {round(float(traj['reward'].sum(1).mean()), 3) + 0.0:+.3f}) -> {out}")
    if args.qmap:
        from .rollout import imagine_qmap
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.qmap))):
            raise UsageError(f"--qmap directory for '{args.qmap}' does not exist — create it first")
        imagine_qmap(run, args.horizon, args.qmap, args.context, args.seed)
        print(f"Q-map -> {args.qmap}")
    return 0


def cmd_record(args) -> int:
    import numpy as np
    from envs import side_by_side, write_video
    from .rollout import LoadedRun, open_loop
    _positive("episodes", args.episodes)
    _positive("context", args.context)
    out = _out_path(args.out)
    run = LoadedRun(args.checkpoint)
    frames, returns = [], []
    with _progress(args.episodes, "episode") as bar:
        for i in range(args.episodes):
            if args.side_by_side:
                real, imag, captions, ep = open_loop(run, args.seed + i, args.context)
                frames += side_by_side(real, imag, captions=captions)
                n = len(ep["actions"])
                if args.context - 1 + len(real) < n:
                    bar.write(f"episode {i}: side by side for steps {min(args.context, n) - 1}-"
                              f"{min(args.context, n) - 2 + len(real)} of {n}: open-loop imagination stops at "
                              f"the trained horizon (trainer.seq_len={run.cfg.trainer.seq_len})")
            else:
                ep = run.episode(args.seed + i)
                frames += ep["frames"]
            returns.append(ep["return"])
            bar.update(1)
    if not frames:
        raise UsageError(f"{run.cfg.env.id} has no image observation and no rgb_array renderer — nothing to "
                         "record (install its render dependencies, e.g. pygame for classic control)")
    write_video(frames, out, fps=8)
    print(f"recorded {args.episodes} episode(s), mean return {np.mean(returns):.3f}, {len(frames)} frames -> {out}")
    return 0


def cmd_env_check(args) -> int:
    from envs import check_env, format_report
    print(format_report(check_env(args.spec)))
    return 0


# OS errors a user causes and fixes: a full disk, a path that is missing, read-only or not theirs
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.ENOENT, errno.EROFS,
                  errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def is_user_error(e: BaseException) -> bool:
    """A QuatrixError (config, env, spaces, checkpoint, training that cannot go on) or an OS error
    about a path or the disk. Anything else is a bug and keeps its traceback."""
    from quatrix_world.errors import QuatrixError
    return isinstance(e, QuatrixError) or (isinstance(e, OSError) and e.errno in USER_OS_ERRORS)


def _message(e: BaseException) -> str:
    """The one-line `error:` text for a user error."""
    if isinstance(e, OSError) and e.strerror:          # disk full, permission denied, missing path…
        where = f" '{e.filename}'" if e.filename else ""
        return f"{e.strerror}{where} — check the path, its permissions and the free disk space"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _cwd_importable() -> None:
    """`--set env.id=my_envs:MyEnv` / `env-check my_envs:MyEnv` find modules in the current directory,
    as under `python -m`; the console script alone does not put it on sys.path. Appended, so it never
    shadows an installed package."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _cwd_importable()
    handlers = {"train": cmd_train, "eval": cmd_eval, "imagine": cmd_imagine, "record": cmd_record,
                "env-check": cmd_env_check}
    try:
        with warnings.catch_warnings():       # libraries' deprecation notes are not the user's to act on
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            return handlers[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("QUATRIX_DEBUG"):
            raise
        if not is_user_error(e):
            traceback.print_exc()
            print("quatrix-world: this is a bug, not something you did — please report it with the "
                  "traceback above", file=sys.stderr)
            return 1
        print(f"error: {_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
