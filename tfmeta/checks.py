"""Checks of an argument's value shared by every layer: each raises one
ValueError line naming the argument."""

from __future__ import annotations

import math
import numbers


def check_finite(name: str, value: float, positive: bool = False) -> None:
    """Raises ValueError unless ``value`` is a finite number (and > 0)."""
    numeric = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not numeric or not math.isfinite(value) or (positive and value <= 0):
        raise ValueError(
            f"{name} must be a finite number{' > 0' if positive else ''}, got {value!r}"
        )


def check_optional_count(name: str, value: int | None, minimum: int = 0) -> None:
    """Raises ValueError unless ``value`` is None or an integer >= ``minimum``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{name} must be an integer >= {minimum} or None, got {value!r}"
        )
