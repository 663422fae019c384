"""One run per workdir: an exclusive ``flock`` on a file in it.

The operating system releases the lock when the holding process ends, however
it ends (a crash or a kill leaves nothing stuck), and only then. Once the run
starts writing, the file holds its pid, host and start time, for the message
a second run gets; the lock itself is the ``flock``, never the file's presence.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time


class WorkdirLockedError(RuntimeError):
    """Raised when another process holds the lock of a workdir."""


class FileLock:
    """An exclusive, non-blocking, non-reentrant lock on ``path`` (created if absent).

    Two ``FileLock`` objects on one path exclude each other, also within one
    process (a ``flock`` belongs to an open file, not to a process).
    """

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None
        self._announced = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> str:
        """Who holds the lock, as its file says ("" if it says nothing readable)."""
        try:
            with open(self.path) as f:
                info = json.load(f)
            return f"pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return ""

    def acquire(self) -> None:
        """Takes the lock, or raises WorkdirLockedError naming the holder."""
        if self.held:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            raise WorkdirLockedError(
                f"{os.path.dirname(os.path.abspath(self.path))} is in use by another run"
                f"{f' ({holder})' if holder else ''}: wait for it to end or stop it"
            ) from None
        self._fd = fd
        self._announced = False

    def announce(self) -> None:
        """Writes the holder's pid, host and start time into the held lock's file
        (once). Kept apart from ``acquire`` so that a run refused after taking
        the lock leaves the file as it was."""
        if self._fd is None:
            raise RuntimeError(f"lock {self.path} is not held")
        if self._announced:
            return
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, (json.dumps(info) + "\n").encode(), 0)
        self._announced = True

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
