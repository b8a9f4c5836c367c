"""Checkpoints: one torch file of tensors and plain values, loaded with weights_only=True.

Saving writes a temp file in the same directory, fsyncs it and renames it over the target, so a
crash (or a full disk) mid-write leaves the previous checkpoint intact; `keep_previous=True` first
moves the old file to `previous.pt`, so the last two checkpoints are kept. Each checkpoint stores a
SHA-256 of its content (every tensor's bytes, dtype and shape, every plain value), checked on load:
flipped bytes are one clear error, not silently wrong weights. Loading never unpickles arbitrary
objects: a checkpoint that needs code to load is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle

import torch

from .errors import QuatrixError
from .files import atomic_path

FORMAT = "quatrix-world/1"
EARLIER = ("use an earlier checkpoint (checkpoints/previous.pt, which `train --resume` falls back to by itself, "
           "or checkpoints/best.pt)")


class CheckpointError(QuatrixError, ValueError):
    """A checkpoint that is missing, corrupt, unsafe or made for a different model/env."""


def content_digest(obj) -> str:
    """SHA-256 over a nested structure of dicts, lists, tensors and plain values (dict keys sorted)."""
    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=str):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        else:
            h.update(repr(x).encode())
    walk(obj)
    return h.hexdigest()


class _Recording:
    """A binary file that remembers the OSError of a failed write (ENOSPC, EDQUOT, EIO, ...)."""

    def __init__(self, f, name: str):
        self.f, self.name, self.error = f, name, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = OSError(e.errno, e.strerror, self.name)
            raise

    def flush(self):
        try:
            self.f.flush()
        except OSError as e:
            self.error = OSError(e.errno, e.strerror, self.name)
            raise

    def __getattr__(self, name):
        return getattr(self.f, name)


def atomic_save(obj, path: str, keep_previous: bool = False) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"directory '{directory}' does not exist — create it or choose another path")
    previous = os.path.join(directory, "previous.pt") if keep_previous else None
    with atomic_path(path, previous) as tmp, open(tmp, "wb") as raw:
        f = _Recording(raw, path)
        try:
            torch.save(obj, f)
            f.flush()
        except RuntimeError:
            if f.error is None:          # torch's own failure, not the disk's
                raise
            raise f.error from None      # torch reports a failed write as "unexpected pos": say what it was


def save_checkpoint(path: str, *, config_yaml: str, spec: dict, state: dict, keep_previous: bool = False) -> None:
    payload = {"format": FORMAT, "config": config_yaml, "spec": json.dumps(spec, sort_keys=True)}
    payload.update(state)
    payload["sha256"] = content_digest(payload)
    atomic_save(payload, path, keep_previous)


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
                              f"{EARLIER}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is not a quatrix-world checkpoint (format {FORMAT})")
    stored = payload.pop("sha256", None)
    if stored is not None and stored != content_digest(payload):
        raise CheckpointError(f"checkpoint '{path}' is corrupt: its content does not match the SHA-256 stored "
                              f"with it — {EARLIER}")
    try:
        payload["spec"] = json.loads(payload["spec"])
    except (TypeError, ValueError):
        raise CheckpointError(f"checkpoint '{path}' has an unreadable spec (not JSON) — {EARLIER}") from None
    payload["path"] = path
    return payload


def load_weights(module: torch.nn.Module, state_dict: dict, path: str) -> None:
    """module.load_state_dict, with a mismatch as one CheckpointError naming the checkpoint."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        detail = " ".join(lines[1:] or lines or ["mismatch"])          # the line after "Error(s) in loading"
        raise CheckpointError(f"checkpoint '{path}' does not fit this model ({detail[:200]}) — load it with the "
                              "config it was trained with (its run's config.yaml)") from None


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
MAY_CHANGE = ("agent.lr", "agent.critic_lr", "agent.entropy", "agent.entropy_target", "agent.entropy_rate",
              "agent.entropy_max_ratio")


def check_compatible(ck: dict, cfg, spec: dict) -> None:
    """A checkpoint must match the env's spaces and the model config (world.*, agent.* except
    MAY_CHANGE); the error names every difference."""
    from .config import config_from_yaml_text, to_dict
    saved_keys, keys = sorted(ck["spec"].get("obs", {})), sorted(spec.get("obs", {}))
    if saved_keys != keys:
        raise CheckpointError(f"checkpoint {ck['path']} was made for observation keys {saved_keys}, this env has "
                              f"{keys} — use the env it was trained on (checkpoints from before Dict observations "
                              "kept their own key names, e.g. 'pixels' for MiniGrid's 'image', need retraining)")
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
