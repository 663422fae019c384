"""Resuming a run: only the settings that cannot alter its course may change."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tfmeta.training.files import to_json


def resume_differences(
    stored: dict[str, Any],
    requested: dict[str, Any],
    *,
    may_change: Iterable[str],
    defaults: dict[str, Any] | None = None,
) -> list[str]:
    """Every setting of ``requested`` outside ``may_change`` whose value differs
    from the stored run's, as "key: stored X, requested Y".

    A key missing from ``stored`` (a run made before the setting existed)
    counts as its value in ``defaults``. Keys only in ``stored`` (settings that
    no longer exist) are ignored.
    """
    defaults = defaults or {}
    allowed = set(may_change)
    differences = []
    for key in sorted(requested):
        if key in allowed:
            continue
        before = stored.get(key, defaults.get(key))
        # Compared as stored: a tuple equals the list it is saved as.
        if to_json(before) != to_json(requested[key]):
            differences.append(
                f"{key}: stored {before!r}, requested {requested[key]!r}"
            )
    return differences


def check_resume(
    stored: dict[str, Any],
    requested: dict[str, Any],
    *,
    may_change: Iterable[str],
    defaults: dict[str, Any] | None = None,
) -> None:
    """Raises ValueError naming every difference of ``resume_differences``."""
    differences = resume_differences(
        stored, requested, may_change=may_change, defaults=defaults
    )
    if differences:
        raise ValueError(
            "the workdir holds a run with other settings, which resuming would change; "
            "use a new workdir or the stored values. Differences: "
            + "; ".join(differences)
        )
