"""Checkpoints: one torch file of tensors and plain values, loaded with weights_only=True.

Saving writes a temp file in the same directory, fsyncs it and renames it over the target, so a
crash (or a full disk) mid-write leaves the previous checkpoint intact. Loading never unpickles
arbitrary objects: a checkpoint that needs code to load is refused.
"""
from __future__ import annotations

import json
import os
import pickle
import tempfile

import torch

FORMAT = "quatrix-world/1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, unsafe or made for a different model/env."""


def atomic_save(obj, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"directory '{directory}' does not exist — create it or choose another path")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=directory)
    try:
        os.chmod(tmp, 0o644)            # mkstemp makes 0600; a checkpoint is an ordinary file
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(path: str, *, config_yaml: str, spec: dict, state: dict) -> None:
    payload = {"format": FORMAT, "config": config_yaml, "spec": json.dumps(spec, sort_keys=True)}
    payload.update(state)
    atomic_save(payload, path)


def resolve_checkpoint(path: str) -> str:
    """A checkpoint file, or a run directory (-> its checkpoints/latest.pt)."""
    if os.path.isdir(path):
        for cand in (os.path.join(path, "checkpoints", "latest.pt"), os.path.join(path, "latest.pt")):
            if os.path.isfile(cand):
                return cand
        raise CheckpointError(f"'{path}' holds no checkpoint (looked for checkpoints/latest.pt) — "
                              "pass a run directory that has trained, or a .pt file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: '{path}' — pass a run directory or a .pt file")
    return path


def load_checkpoint(path: str) -> dict:
    path = resolve_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise CheckpointError(f"refused to load '{path}': it is not a plain-tensor checkpoint ({first[:120]}) — "
                              "only load checkpoints written by quatrix-world") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"checkpoint '{path}' is truncated or corrupt ({first[:120]}) — "
                              "use an earlier checkpoint, e.g. checkpoints/best.pt") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a quatrix-world checkpoint (format {FORMAT})")
    payload["spec"] = json.loads(payload["spec"])
    payload["path"] = path
    return payload


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted paths of every field where two nested dicts/lists differ, in sorted key order."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{prefix}{k}")
            else:
                out += differences(a[k], b[k], f"{prefix}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [prefix.rstrip(".")]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".")]


def first_difference(a, b, prefix: str = "") -> str | None:
    """Dotted path of the first field where two nested dicts/lists differ, or None."""
    d = differences(a, b, prefix)
    return d[0] if d else None


# Settings a resumed or loaded run may change: they do not alter any weight's shape or meaning.
MAY_CHANGE = ("agent.lr", "agent.critic_lr", "agent.entropy")


def check_compatible(ck: dict, cfg, spec: dict) -> None:
    """A checkpoint must match the env's spaces and the model config (world.*, agent.* except
    MAY_CHANGE); the error names every difference."""
    from .config import config_from_yaml_text, to_dict
    diff = first_difference(ck["spec"], spec)
    if diff:
        raise CheckpointError(f"checkpoint {ck['path']} was made for a different observation/action space "
                              f"(field '{diff}' differs) — use the env it was trained on")
    saved = config_from_yaml_text(ck["config"])
    diffs = [d for section in ("world", "agent")
             for d in differences(to_dict(getattr(saved, section)), to_dict(getattr(cfg, section)), section + ".")
             if d not in MAY_CHANGE]
    if diffs:
        raise CheckpointError(f"checkpoint {ck['path']} has a different model config: "
                              f"{', '.join(repr(d) for d in diffs)} differ{'s' if len(diffs) == 1 else ''} — "
                              "load it with the config it was trained with (its run's config.yaml)")
