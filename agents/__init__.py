"""Agents that learn inside a QuatrixWorld, the trainer and the `quatrix-world` CLI.

The public API (`train`, `load`, the agent classes) loads on first use, so `import agents` and the
CLI's `--help` stay fast (no torch, gymnasium or torchrl until something needs them).
"""
from __future__ import annotations

import importlib

AGENTS = {"actor_critic": "ActorCritic", "grpo": "GRPO"}          # agent.kind -> its class (in _LAZY)
_LAZY = {"ActorCritic": ("actor_critic", "ActorCritic"), "GRPO": ("grpo", "GRPO"),
         "Actor": ("common", "Actor"), "AgentBase": ("common", "AgentBase"), "Critic": ("common", "Critic"),
         "lambda_returns": ("common", "lambda_returns"), "LoadedRun": ("rollout", "LoadedRun"),
         "Trainer": ("trainer", "Trainer")}

def build_agent(cfg, feat_dim: int, act_desc: dict, latent: tuple[int, int] | None = None):
    """The agent named by `cfg.kind` (an AgentConfig) for a world model's features and actions;
    `latent` = (groups, classes) of its z (`world.latent_shape`) lets the agent read z by index."""
    from quatrix_world.errors import UsageError
    if cfg.kind not in AGENTS:
        raise UsageError(f"agent.kind must be one of {sorted(AGENTS)}, got {cfg.kind!r}")
    return __getattr__(AGENTS[cfg.kind])(cfg, feat_dim, act_desc, latent)


def train(*args, **kwargs):
    """See agents.api.train."""
    from .api import train as _train
    return _train(*args, **kwargs)


def load(*args, **kwargs):
    """See agents.api.load."""
    from .api import load as _load
    return _load(*args, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'agents' has no attribute '{name}'")


__all__ = ["ActorCritic", "GRPO", "LoadedRun", "load", "train"]     # the stable API; the rest is internal
