"""What the training loop and the evaluation use of a meta-learner."""

from __future__ import annotations

from typing import Any, Protocol

import tensorflow as tf


class Learner(Protocol):
    """A meta-learner as the trainer sees it: its model and outer optimizer are
    checkpointed, its steps return dicts of tensors."""

    model: Any  # keras.Model
    outer_optimizer: Any  # keras.optimizers.Optimizer
    metric_name: str  # "accuracy" (higher is better) or "mse"
    eval_inner_steps: int

    def meta_train_step(self, episode) -> dict[str, tf.Tensor]: ...

    def meta_eval_step(self, episode, inner_steps=None) -> dict[str, tf.Tensor]: ...
