"""Atomic file writes and strict JSON (no NaN or infinity) for the run's files."""

from __future__ import annotations

import json
import math
import os
from typing import Any


def atomic_write(path: str, text: str) -> None:
    """Writes ``text`` to a temporary file, syncs it, then renames it over
    ``path``: a crash leaves the old file or the new one, never half of one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def to_json(value: Any) -> str:
    """Strict JSON (sorted keys, indented): a non-finite float becomes null."""
    return json.dumps(finite_or_none(value), indent=2, sort_keys=True, allow_nan=False)


def write_if_changed(path: str, text: str) -> None:
    """Writes ``text`` atomically unless the file already holds it (its
    modification time then stays)."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text)


def write_json(path: str, value: Any) -> None:
    """Writes ``value`` as strict JSON, atomically; leaves an identical file untouched."""
    write_if_changed(path, to_json(value) + "\n")


def read_json(path: str) -> Any:
    """The JSON value in ``path``; ValueError naming the file if it is not JSON."""
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
