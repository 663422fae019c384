"""Functional optimizers for inner loops: state is tensors, nothing is assigned.

Each optimizer is a pair of pure functions: ``init(params) -> state`` and
``update(params, grads, state, step) -> (new_params, new_state)`` over lists of
tensors, so an inner loop can run inside a ``tf.function``, a ``tf.while_loop``
or a ``GradientTape`` (second-order MAML differentiates through ``update``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

Tensors = list[tf.Tensor]


@dataclasses.dataclass(frozen=True)
class InnerSGD:
    """theta' = theta - alpha * grad (alpha: ``learning_rate``)."""

    learning_rate: float

    def describe(self) -> dict:
        return {"inner_optimizer": "sgd", "inner_lr": float(self.learning_rate)}

    def init(self, params: Sequence[tf.Tensor]) -> tuple:
        return ()

    def update(
        self,
        params: Sequence[tf.Tensor],
        grads: Sequence[tf.Tensor],
        state: tuple,
        step,
    ) -> tuple[Tensors, tuple]:
        return [p - self.learning_rate * g for p, g in zip(params, grads)], state


@dataclasses.dataclass(frozen=True)
class InnerAdam:
    """Adam (Kingma and Ba 2015) with bias correction, as ``tf.train.AdamOptimizer``.

    The Reptile paper's inner optimizer is Adam with beta1 = 0. The moments
    start at zero for every task (``init``), so tasks do not share state.
    """

    learning_rate: float
    beta1: float = 0.0
    beta2: float = 0.999
    epsilon: float = 1e-8

    def describe(self) -> dict:
        return {"inner_optimizer": "adam", "inner_lr": float(self.learning_rate)}

    def init(self, params: Sequence[tf.Tensor]) -> tuple:
        return ([tf.zeros_like(p) for p in params], [tf.zeros_like(p) for p in params])

    def update(
        self,
        params: Sequence[tf.Tensor],
        grads: Sequence[tf.Tensor],
        state: tuple,
        step,
    ) -> tuple[Tensors, tuple]:
        first, second = state
        t = tf.cast(step, params[0].dtype) + 1.0
        scale = (
            self.learning_rate * tf.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        )
        first = [self.beta1 * m + (1.0 - self.beta1) * g for m, g in zip(first, grads)]
        second = [
            self.beta2 * v + (1.0 - self.beta2) * tf.square(g)
            for v, g in zip(second, grads)
        ]
        params = [
            p - scale * m / (tf.sqrt(v) + self.epsilon)
            for p, m, v in zip(params, first, second)
        ]
        return params, (first, second)


def make_inner_optimizer(
    name: str, learning_rate: float, **kwargs
) -> InnerSGD | InnerAdam:
    if name == "sgd":
        return InnerSGD(learning_rate)
    if name == "adam":
        return InnerAdam(learning_rate, **kwargs)
    raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {name!r}")
