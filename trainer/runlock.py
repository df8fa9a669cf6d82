"""One trainer per run folder: an exclusive lock held for the run's whole life.

Two trainers writing ``runs/<name>/`` at once interleave checkpoints of different models and lose
metrics, and both exit 0. The first one to start takes ``runs/<name>/.lock`` (``flock``, released
by the kernel when the process ends, even on SIGKILL, so a crashed run never leaves a stale lock);
a second one stops with one line naming the holder. The file records who holds it (pid, host,
start time, command) for that message, and is removed when the run ends.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from vqexplore.errors import VQExploreError

LOCK_NAME = ".lock"


class RunInUse(VQExploreError):
    """Another trainer holds the run folder."""


class RunLock:
    """``with RunLock(run_dir, command):`` holds ``run_dir/.lock`` or raises :class:`RunInUse`."""

    def __init__(self, run_dir: str | Path, command: str | None = None):
        self.path = Path(run_dir) / LOCK_NAME
        self.command = command
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> "RunLock":
        folder = self.path.parent
        # Folders made only for the lock are removed again on release when still empty (a run that
        # fails before its first write leaves nothing behind).
        self._made = [d for d in (folder, *folder.parents) if not d.exists()][::-1]
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(os.read(fd, 4096))
                os.close(fd)
                raise RunInUse(f"{folder} is in use by another trainer ({holder}); wait for it to finish, "
                               f"stop it, or choose another name=...") from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have unlinked the file after we opened it: retry
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still holding it: nobody can take the old inode
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None
        for folder in reversed(self._made):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        text = f"pid {info['pid']} on {info['host']}, started {info['started']}"
        return text + (f": {info['command']}" if info.get("command") else "")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "a process that is starting"
