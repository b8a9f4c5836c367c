"""Agents that learn inside a QuatrixWorld, the trainer and the `quatrix-world` CLI."""
from .common import Actor, Critic, build_agent, lambda_returns

__all__ = ["Actor", "Critic", "build_agent", "lambda_returns"]
