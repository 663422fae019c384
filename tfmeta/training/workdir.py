"""The training workdir: resolved config, checkpoints, results."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

CONFIG_FILE = "config.json"


def config_path(workdir: str) -> str:
    return os.path.join(workdir, CONFIG_FILE)


def write_json(path: str, value: Any) -> None:
    """Writes atomically (temporary file then rename), so a crash never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(temporary, path)


def read_config(workdir: str) -> dict[str, Any]:
    path = config_path(workdir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no {CONFIG_FILE} in workdir {workdir!r}: is it a tfmeta training workdir?"
        )
    with open(path) as f:
        return json.load(f)


def check_resume(
    stored: dict[str, Any],
    requested: dict[str, Any],
    fixed_keys: Iterable[str],
    defaults: dict[str, Any] | None = None,
) -> None:
    """Refuses to resume a run whose model or task would change.

    Raises ValueError naming every key in ``fixed_keys`` whose value differs.
    A key missing from ``stored`` (a run made before the setting existed)
    counts as its value in ``defaults``.
    """
    defaults = defaults or {}
    differences = [
        f"{key}: stored {stored.get(key, defaults.get(key))!r}, requested {requested.get(key)!r}"
        for key in fixed_keys
        if stored.get(key, defaults.get(key)) != requested.get(key)
    ]
    if differences:
        raise ValueError(
            "the workdir holds a run with a different model or task; use a new --workdir or the stored values. "
            "Differences: " + "; ".join(differences)
        )


def prepare_workdir(
    workdir: str,
    config: dict[str, Any],
    fixed_keys: Iterable[str],
    defaults: dict[str, Any] | None = None,
) -> bool:
    """Writes ``config`` to a new workdir, or checks it against the stored one.

    Returns True when resuming an existing run. Settings outside ``fixed_keys``
    (e.g. num_steps) may change on resume; the stored config is updated.
    """
    path = config_path(workdir)
    resuming = os.path.exists(path)
    if resuming:
        check_resume(read_config(workdir), config, fixed_keys, defaults)
    write_json(path, config)
    return resuming
