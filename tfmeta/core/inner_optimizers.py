"""Functional optimizers for inner loops: state is tensors, nothing is assigned.

Each optimizer is a pair of pure functions: ``init(params) -> state`` and
``update(params, grads, state, step) -> (new_params, new_state)`` over lists of
tensors, so an inner loop can run inside a ``tf.function``, a ``tf.while_loop``
or a ``GradientTape`` (second-order MAML differentiates through ``update``).
``init`` may make the state depend on the parameters it starts from (theta):
every meta-gradient path differentiates through it, the recomputed ones by
pulling the state's cotangent back through ``init``
(``tfmeta.core.second_order``); the built-in states start at zero.

``learning_rates`` (optional in ``update``): one step size per parameter
tensor, broadcastable to it (a scalar per layer as MAML++'s LSLR, the
tensor's shape as Meta-SGD), in place of the fixed ``learning_rate``. They
are tensors of theta, so the meta-gradient reaches them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import tensorflow as tf

Tensors = list[tf.Tensor]
INNER_OPTIMIZERS = ("sgd", "adam")


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
        learning_rates: Sequence[tf.Tensor] | None = None,
    ) -> tuple[Tensors, tuple]:
        rates = _rates(self.learning_rate, params, learning_rates)
        return [p - rate * g for p, g, rate in zip(params, grads, rates)], state


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
        learning_rates: Sequence[tf.Tensor] | None = None,
    ) -> tuple[Tensors, tuple]:
        first, second = state
        t = tf.cast(step, params[0].dtype) + 1.0
        correction = tf.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)
        first = [self.beta1 * m + (1.0 - self.beta1) * g for m, g in zip(first, grads)]
        second = [
            self.beta2 * v + (1.0 - self.beta2) * tf.square(g)
            for v, g in zip(second, grads)
        ]
        rates = _rates(self.learning_rate, params, learning_rates)
        params = [
            p - rate * correction * m / (tf.sqrt(v) + self.epsilon)
            for p, m, v, rate in zip(params, first, second, rates)
        ]
        return params, (first, second)


def _rates(learning_rate: float, params, learning_rates) -> list:
    """The step size of each tensor: ``learning_rates``, else alpha for all."""
    if learning_rates is None:
        return [learning_rate] * len(params)
    if len(learning_rates) != len(params):
        raise ValueError(
            f"got {len(learning_rates)} learning rates for {len(params)} tensors"
        )
    return list(learning_rates)


def make_inner_optimizer(
    name: str, learning_rate: float, **kwargs
) -> InnerSGD | InnerAdam:
    """The inner optimizer named ``name`` ("sgd" or "adam") with step size alpha.

    Args:
      name: "sgd" or "adam" (the config's ``inner_optimizer``).
      learning_rate: alpha, the inner step size.
      **kwargs: ``InnerAdam``'s other settings (``beta1``, ...).

    Raises:
      ValueError: naming the config key (``inner_optimizer``, ``inner_lr``,
        ``inner_beta1``) of another name, an alpha that is not a finite
        number > 0, or a beta1 outside [0, 1).
    """
    from tfmeta.checks import check_finite

    if name not in INNER_OPTIMIZERS:
        raise ValueError(
            f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got {name!r}"
        )
    check_finite("inner_lr", learning_rate, positive=True)
    if name == "sgd":
        return InnerSGD(learning_rate)
    beta1 = kwargs.get("beta1", 0.0)
    check_finite("inner_beta1", beta1)
    if not 0.0 <= beta1 < 1.0:
        raise ValueError(f"inner_beta1 must be in [0, 1), got {beta1}")
    return InnerAdam(learning_rate, **kwargs)
