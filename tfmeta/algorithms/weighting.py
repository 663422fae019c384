"""How the per-task meta-gradients of a meta-batch are combined."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

TASK_WEIGHTINGS = ("uniform",)


def check_task_weighting(name: str) -> None:
    if name not in TASK_WEIGHTINGS:
        raise ValueError(
            f"task_weighting must be one of {TASK_WEIGHTINGS}, got {name!r}"
        )


def task_weights(name: str, updates: Sequence[Sequence[tf.Tensor]]) -> tf.Tensor:
    """Weights ``[T]`` for T tasks; ``updates[i]`` is task i's update vector theta - theta'_i
    (a list of tensors). "uniform": 1/T each (the plain mean). Weights have
    the updates' dtype."""
    check_task_weighting(name)
    tasks = len(updates)
    return tf.fill([tasks], tf.constant(1.0 / tasks, updates[0][0].dtype))
