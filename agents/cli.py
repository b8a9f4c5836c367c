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
  quatrix-world train --config configs/debug.yaml
  quatrix-world train --config configs/minigrid_empty.yaml --set agent.kind=grpo --set run.name=empty_grpo
  quatrix-world eval --checkpoint runs/debug --episodes 10
  quatrix-world imagine --checkpoint runs/debug --horizon 12 --out imagined.gif --group 4
  quatrix-world record --checkpoint runs/debug --episodes 1 --out real_vs_imagined.mp4 --side-by-side
  quatrix-world env-check CartPole-v1
"""


def _version() -> str:
    from quatrix_world import __version__
    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quatrix-world", description="World models and RL agents on the Quatrix "
                                "(Q-Compass) architecture.", epilog=USAGE_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"quatrix-world {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a world model and an agent")
    t.add_argument("--config", action="append", default=[], help="YAML file(s), later ones win; "
                   "configs/default.yaml is always applied first")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    t.add_argument("--run-dir", help="output directory (default runs/<run.name>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    t.add_argument("--fresh-episode", action="store_true", help="with --resume: start a new episode instead of "
                   "replaying the interrupted one (for envs that are not deterministic given a seed)")
    t.add_argument("--force", action="store_true", help="replace the run already in the run folder (its "
                   "checkpoints, metrics and events are deleted first)")
    t.add_argument("--dry-run", action="store_true", help="resolve config, build env and model, print, exit")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="evaluate a checkpoint on fresh episodes")
    e.add_argument("--checkpoint", required=True, help="run directory or checkpoint file")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--deterministic", action="store_true", help="the most likely action instead of a sampled "
                   "one (default: sampled, the policy as trained and as the benchmark tables score it)")
    e.add_argument("--out", help="where to write eval.json (default: the run directory)")

    i = sub.add_parser("imagine", help="render an imagined rollout from a checkpoint")
    i.add_argument("--checkpoint", required=True)
    i.add_argument("--horizon", type=int, default=None,
                   help="imagined steps (default: trainer.seq_len - context, the longest the model trained on)")
    i.add_argument("--group", type=int, default=1, help="branches from the same start, side by side")
    i.add_argument("--context", type=int, default=4, help="real steps before imagining")
    i.add_argument("--out", required=True, help=".mp4 or .gif")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--qmap", metavar="FILE.png", help="also save the core's Q-map heatmap for the rollout")

    r = sub.add_parser("record", help="record real episodes (optionally beside open-loop imagination)")
    r.add_argument("--checkpoint", required=True)
    r.add_argument("--episodes", type=int, default=1)
    r.add_argument("--out", required=True, help=".mp4 or .gif")
    r.add_argument("--side-by-side", action="store_true", help="real | imagined | error columns")
    r.add_argument("--context", type=int, default=4)
    r.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("env-check", help="check that an environment can be trained on")
    c.add_argument("spec", help="gymnasium id or package.module:Name")
    return p


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise UsageError(f"--{name} must be > 0, got {value} — pass a positive number, e.g. --{name} 1")


def _out_path(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise UsageError(f"output directory '{d}' does not exist — create it first or choose another --out")
    if not path.endswith((".mp4", ".gif")):
        raise UsageError(f"--out must end in .mp4 or .gif, got '{path}'")
    return path


def cmd_train(args) -> int:
    from quatrix_world.config import load_config, read_yaml, apply_override, parse_override, \
        from_dict, validate, ConfigError
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
        run_dir = args.run_dir or os.path.join(cfg.run.dir, cfg.run.name)
    from .device import resolve_device
    resolve_device(cfg.run.device)       # a missing GPU is an error before anything is built or written
    if args.dry_run:
        return _dry_run(cfg, run_dir)
    from .trainer import Trainer
    if int(os.environ.get("RANK", "0")) == 0:
        os.makedirs(run_dir, exist_ok=True)
    trainer = Trainer(cfg, run_dir, resume=bool(args.resume), quiet=args.quiet, force=args.force,
                      fresh_episode=args.fresh_episode)
    summary = trainer.train()
    if not trainer.is_main:          # data parallel: rank 0 reports for all (other ranks do not evaluate)
        return 0
    if summary["interrupted"]:       # the trainer said where the checkpoint is and how to continue
        return 130
    last = summary.get("last_eval", {})
    scores = [f"{name} {last[key]:.3f}" for name, key in (("eval return", "eval/return"),
                                                          ("sampled", "eval/return_sampled")) if key in last]
    print(f"done: {summary['step']} env steps, {summary['updates']} updates, "
          f"{', '.join(scores) or 'not evaluated'}, {summary['wall_seconds']:.0f}s — run in {run_dir}")
    return 0


def _dry_run(cfg, run_dir: str) -> int:
    from quatrix_world.config import to_yaml
    from quatrix_world.world import QuatrixWorld
    from . import build_agent
    from .collect import build_env, env_specs
    env = build_env(cfg, cfg.seed)
    obs, act = env_specs(env)
    world = QuatrixWorld(cfg.world, obs, act)
    agent = build_agent(cfg.agent, world.feat_dim, world.act_desc)
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
    from .rollout import LoadedRun, evaluate, write_json
    _positive("episodes", args.episodes)
    run = LoadedRun(args.checkpoint)
    out = args.out or os.path.join(run.run_dir, "eval.json")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UsageError(f"output directory for '{out}' does not exist — create it first")
    result = evaluate(run, args.episodes, deterministic=args.deterministic)
    write_json(result, out)
    print(f"{result['env']} step {result['step']}: return {result['mean_return']:.3f} ± {result['std_return']:.3f} "
          f"over {args.episodes} episodes -> {out}")
    return 0


def cmd_imagine(args) -> int:
    from envs import write_video
    from .rollout import LoadedRun, imagine_frames
    if args.horizon is not None:
        _positive("horizon", args.horizon)
    _positive("group", args.group)
    _positive("context", args.context)
    out = _out_path(args.out)
    run = LoadedRun(args.checkpoint)
    trained = run.cfg.trainer.seq_len                 # positions past it were never trained
    if args.horizon is None:
        args.horizon = max(1, trained - args.context)
    if args.context + args.horizon > trained:
        raise UsageError(f"--context + --horizon ({args.context}+{args.horizon}) must be <= {trained}, the "
                         f"trainer.seq_len this model trained on — use --horizon {max(1, trained - args.context)} "
                         "or less")
    frames, traj = imagine_frames(run, args.horizon, args.group, args.context, args.seed)
    write_video(frames, out, fps=8)
    print(f"imagined {args.group} x {args.horizon} steps (predicted return "
          f"{float(traj['reward'].sum(1).mean()):.3f}) -> {out}")
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
    for i in range(args.episodes):
        if args.side_by_side:
            real, imag, captions, ep = open_loop(run, args.seed + i, args.context)
            frames += side_by_side(real, imag, captions=captions)
            if len(real) < len(ep["actions"]) - min(args.context, len(ep["actions"])) + 1:
                print(f"episode {i}: side by side up to step {args.context - 1 + len(real) - 1} of "
                      f"{len(ep['actions'])}: open-loop imagination ends at world.max_seq_len="
                      f"{run.cfg.world.max_seq_len} positions")
        else:
            ep = run.episode(args.seed + i)
            frames += ep["frames"]
        returns.append(ep["return"])
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
