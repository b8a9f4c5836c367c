"""EnvError: every mistake a user can make with an environment, in one line with the fix."""
from __future__ import annotations

import difflib

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
