"""One way to write a file so that a crash, a kill or a full disk never leaves it half-written.

    with atomic_path("runs/x/metrics.csv") as tmp:
        write to tmp (by name)

writes into a temporary file `.tmp-*` beside the target, fsyncs it, renames it over the target
and fsyncs the folder; on any error the temporary file is removed and the target is untouched.
The file gets the modes of an ordinary new file (0666 minus the umask). With `previous`, the old
target is first moved there, so the last two versions are kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, previous: str | None = None):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)               # mkstemp makes 0600
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if previous is not None and os.path.exists(path):
            os.replace(path, previous)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(obj, path: str) -> None:
    """JSON (indented), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
