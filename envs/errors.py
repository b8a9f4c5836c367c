"""EnvError: every mistake a user can make with an environment, in one line with the fix."""
from __future__ import annotations

import difflib
import re

from quatrix_world.errors import QuatrixError


class EnvError(QuatrixError, ValueError):
    """A user-caused environment problem. The message is one line: what is wrong, and how to fix it."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))   # force a single line


def suggest(name: str, candidates) -> str:
    """' — did you mean 'X'?' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)]
    return f" — did you mean '{close[0]}'?" if close else ""


_VERSION = re.compile(r"-v\d+$")


def _family(env_id: str) -> str:
    """'ALE/Pong-v5' -> 'ale/', 'MiniGrid-Empty-6x6-v0' -> 'minigrid-', 'CartPole-v1' -> 'cartpole'."""
    base = _VERSION.sub("", env_id).lower()
    for sep in ("/", "-"):
        if sep in base:
            return base.split(sep, 1)[0] + sep
    return base


def suggest_env_id(env_id: str, registered) -> str:
    """' — did you mean 'X'?' for a mistyped gymnasium id: ids of the same family (namespace or first
    name part) first, and outside it only a close match of the name without its version, so that
    'Nope-v0' suggests nothing rather than 'Hopper-v5'."""
    ids = [str(i) for i in registered]
    fam = _family(env_id)
    same = [i for i in ids if _family(i) == fam]
    if same:
        hint = suggest(env_id, same)
        if hint:
            return hint
    bases: dict[str, str] = {}
    for i in sorted(ids):                       # the last (highest) version of each name wins
        bases[_VERSION.sub("", i).lower()] = i
    close = difflib.get_close_matches(_VERSION.sub("", env_id).lower(), list(bases), n=1, cutoff=0.8)
    return f" — did you mean '{bases[close[0]]}'?" if close else ""
