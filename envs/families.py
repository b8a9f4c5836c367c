"""Env families: gymnasium ids that need their own preprocessing, in one registry.

A family owns the ids that start with one of its prefixes, the extra `make_env` options it takes
(with their defaults) and `wrap(env, options) -> (env, observation keys to drop)`, applied right
after `gymnasium.make`. Any other id is made as it is.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym


@dataclass(frozen=True)
class Family:
    name: str
    prefixes: tuple[str, ...]
    options: dict[str, Any]
    wrap: Callable[[gym.Env, dict], tuple[gym.Env, tuple]]

    def owns(self, env_id: str) -> bool:
        return env_id.startswith(self.prefixes)


def _wrap_minigrid(env: gym.Env, opts: dict) -> tuple[gym.Env, tuple]:
    """MiniGrid from pixels: the agent's partial view (or the full grid) as RGB; the mission text stays."""
    from minigrid.wrappers import RGBImgObsWrapper, RGBImgPartialObsWrapper
    wrapper = RGBImgObsWrapper if opts["full_view"] else RGBImgPartialObsWrapper
    return wrapper(env, tile_size=int(opts["tile_size"])), ("direction",)


FAMILIES: list[Family] = [
    Family("MiniGrid", ("MiniGrid-",), {"full_view": False, "tile_size": 8}, _wrap_minigrid),
]


def family_of(env_id: str) -> Family | None:
    return next((f for f in FAMILIES if f.owns(env_id)), None)


def family_options() -> set[str]:
    """Every option some family takes."""
    return {k for f in FAMILIES for k in f.options}
