"""Agents that learn inside a QuatrixWorld, the trainer and the `quatrix-world` CLI."""
from quatrix_world.config import AgentConfig
from quatrix_world.errors import UsageError

from .actor_critic import ActorCritic
from .common import Actor, AgentBase, Critic, lambda_returns
from .grpo import GRPO

AGENTS = {"actor_critic": ActorCritic, "grpo": GRPO}


def build_agent(cfg: AgentConfig, feat_dim: int, act_desc: dict) -> AgentBase:
    if cfg.kind not in AGENTS:
        raise UsageError(f"agent.kind must be one of {sorted(AGENTS)}, got {cfg.kind!r}")
    return AGENTS[cfg.kind](cfg, feat_dim, act_desc)


def train(*args, **kwargs):
    """See agents.api.train (imported on first use: it pulls in gymnasium and torchrl)."""
    from .api import train as _train
    return _train(*args, **kwargs)


def load(*args, **kwargs):
    """See agents.api.load."""
    from .api import load as _load
    return _load(*args, **kwargs)


__all__ = ["AGENTS", "Actor", "ActorCritic", "AgentBase", "Critic", "GRPO", "build_agent", "lambda_returns", "load", "train"]
