"""One line of an error for a message to a user; a full disk named as such."""

from __future__ import annotations

import errno
import os
import re
import shutil

_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")


def first_line(error: BaseException) -> str:
    """A TensorFlow error's message (any error's text) without the graph's
    ``{{function_node ...}}`` annotations: its first line, or "" if empty."""
    message = getattr(error, "message", None) or str(error)
    lines = _FUNCTION_NODE.sub("", message).strip().splitlines()
    return lines[0] if lines else ""


class DiskFullError(RuntimeError):
    """Raised when a file cannot be written because its disk is full; the
    message names the folder, the space the write needs and the space free."""


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` is a write that failed for lack of space (an
    ``OSError`` ENOSPC, or TensorFlow's "No space left on device")."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno == errno.ENOSPC
    return "no space left" in str(error).lower()


def disk_full_message(
    folder: str, what: str, needed_bytes: int, at_least: bool = False
) -> str:
    """One line: the folder whose disk is full, what needs about (or, with
    ``at_least``, more than) how many MiB, how many are free, and what to do."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):  # the nearest folder that exists
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    return (
        f"no space left on the disk of {folder} to write {what}: it needs "
        f"{'more than' if at_least else 'about'} "
        f"{needed_bytes / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free; free some "
        "space and run the same command again"
    )
