"""Run-directory ownership: one training process per run folder, and no run silently replaced.

`claim(run_dir, resume, force)` is called before a training writes anything:
- a folder that already holds a run (config.yaml, metrics.csv or checkpoints) is refused unless the
  training resumes it (`--resume`) or replaces it (`--force`, which first removes that run's files);
- an exclusive lock (`fcntl.flock` on `<run>/.lock`, holding the owner's pid) refuses a second
  process on the same run; the kernel releases it when the owner exits, however it exits, so a
  lock is never stale;
- temporary files left by a process killed mid-write (`checkpoints/.tmp-*`, `*.tmp`) are removed.
"""
from __future__ import annotations

import fcntl
import glob
import os
import shutil

from quatrix_world.errors import QuatrixError

RUN_FILES = ("config.yaml", "metrics.csv", "curves.png", "eval.json")      # what a training writes
RUN_DIRS = ("checkpoints", "replay")
RUN_GLOBS = ("events.out.tfevents.*",)


class RunDirError(QuatrixError):
    """The run folder is taken: it holds another run, or another process is training in it."""


class RunExistsError(RunDirError):
    """The run folder already holds a run (and the training neither resumes nor replaces it)."""


def holds_run(run_dir: str) -> bool:
    return any(os.path.exists(os.path.join(run_dir, f)) for f in ("config.yaml", "metrics.csv", "checkpoints"))


class RunLock:
    """An exclusive, process-lifetime lock on a run folder."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".lock")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise RunDirError(f"run folder '{run_dir}' is in use by process {owner} — wait for it to finish, "
                              "or train into another folder (--run-dir DIR)") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        try:
            self.release()
        except OSError:
            pass


def remove_temp_files(run_dir: str) -> list[str]:
    """Delete the temporary files of writes that never finished (their writer was killed)."""
    found = [f for pattern in ("checkpoints/.tmp-*", ".tmp-*", "*.tmp", ".*.tmp.*")     # quatrix_world/files.py
             for f in glob.glob(os.path.join(run_dir, pattern))]
    for f in found:
        os.remove(f)
    return found


def remove_run(run_dir: str) -> None:
    """Remove the files a training wrote (and nothing else in the folder)."""
    for f in RUN_FILES:
        p = os.path.join(run_dir, f)
        if os.path.exists(p):
            os.remove(p)
    for d in RUN_DIRS:
        shutil.rmtree(os.path.join(run_dir, d), ignore_errors=True)
    for pattern in RUN_GLOBS:
        for p in glob.glob(os.path.join(run_dir, pattern)):
            os.remove(p)


def claim(run_dir: str, resume: bool = False, force: bool = False) -> RunLock:
    """Take the run folder for one training (see the module docstring) -> the held lock."""
    if resume and force:
        raise RunDirError("--resume continues a run and --force replaces it — pass one of them")
    os.makedirs(run_dir, exist_ok=True)
    lock = RunLock(run_dir)
    try:
        if not resume and holds_run(run_dir):
            if not force:
                raise RunExistsError(f"run folder '{run_dir}' already holds a run — continue it with --resume "
                                     f"{run_dir}, replace it with --force, or train into another folder "
                                     "(--run-dir DIR)")
            remove_run(run_dir)
        remove_temp_files(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock
