"""What an algorithm module declares, so that binaries, trainer and export
need no knowledge of any one algorithm.

An algorithm module defines one ``Algorithm`` per name it offers: its
learner class (whose capabilities the callers check), the config keys it
owns with their defaults, the check of those keys (run when a config is
resolved, before any data is loaded) and the builder of its learner from a
resolved config. ``tfmeta.algorithms.registry`` maps names to them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfmeta.core.learner import Learner

Config = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm as the rest of tfmeta sees it.

    Attributes:
      name: its name in configs and on the command line.
      learner: the learner class (its ``task_weightings``,
        ``task_executions`` and ``distributable`` are the capabilities).
      defaults: the config keys it owns and their defaults.
      check: ``check(config)`` raises ValueError naming a bad owned value.
      build: ``build(config, model, outer_optimizer, problem) -> Learner``.
      model: the kind of model it needs (``tfmeta.models`` factory name), or
        None for the data's default network.
      summary: one line for listings.
    """

    name: str
    learner: type[Learner]
    defaults: Mapping[str, Any]
    check: Callable[[Config], None]
    build: Callable[[Config, keras.Model, keras.optimizers.Optimizer, str], Learner]
    model: str | None = None
    summary: str = ""

    def check_config(self, config: Config) -> None:
        """Every rule on the keys this algorithm reads, and its capabilities
        on one device (the binary checks the replicas of its strategy)."""
        self.learner.check_capabilities(
            config.get("task_weighting", "uniform"),
            config.get("task_execution", "loop"),
            replicas=1,
        )
        self.check(config)


def check_finite(name: str, value: float, positive: bool = False) -> None:
    """Raises ValueError unless ``value`` is a finite number (and > 0)."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
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
