"""QuatrixError: the base of every error a user can cause and fix (config, env, spaces, checkpoints,
a run that cannot go on). The CLI prints these as one `error: ...` line; any other exception is a
bug and shows its traceback."""


class QuatrixError(Exception):
    """A user-fixable problem. The message is one line: what is wrong, and how to fix it."""


class UsageError(QuatrixError, ValueError):
    """A command-line argument or API call that cannot work (a non-positive count, a missing
    folder, an env without images for a video, ...)."""
