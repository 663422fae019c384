"""MAML (Finn, Abbeel and Levine, ICML 2017) and its first-order variant.

For task i with support set D_i^tr and query set D_i^val,
  theta'_i = theta - alpha * grad_theta L(theta; D_i^tr)       (inner_steps times)
and the meta-objective is sum_i L(theta'_i; D_i^val). Its gradient
  d L(theta'_i; D^val) / d theta = (d theta'_i / d theta)^T grad L(theta'_i; D^val)
holds second derivatives through d theta'_i / d theta: computed exactly by
differentiating the unrolled inner loop with nested ``tf.GradientTape``s.
First-order MAML (FOMAML) drops them, d theta'_i / d theta = I, so the
meta-gradient is the query-loss gradient at the adapted weights.
"""

from __future__ import annotations

import tensorflow as tf

from tfmeta.algorithms.base import MetaLearner


class MAML(MetaLearner):
    """MAML; ``first_order=True`` gives FOMAML.

    ``second_order_steps``: differentiate through the second derivatives of
    only the last this many inner steps (the earlier ones are first order),
    which saves memory and time with many inner steps; None: all steps.
    """

    name = "maml"

    def __init__(
        self,
        *args,
        first_order: bool = False,
        second_order_steps: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if second_order_steps is not None and second_order_steps < 0:
            raise ValueError(
                f"second_order_steps must be >= 0 or None, got {second_order_steps}"
            )
        self.first_order = first_order
        self.second_order_steps = second_order_steps

    def query_outputs(self, fast, support_x, query_x):
        return self.predict(fast, query_x, support_x)

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        params = self.parameters()
        if self.first_order:
            fast = self.inner_loop(
                params, support_x, support_y, self.inner_steps, False, task_seed
            )
            with tf.GradientTape() as tape:
                tape.watch(fast)
                outputs = self.query_outputs(fast, support_x, query_x)
                query_loss = self.loss(outputs, query_y)
            meta_gradient = tape.gradient(
                query_loss, fast, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
        else:
            second = (
                self.inner_steps
                if self.second_order_steps is None
                else self.second_order_steps
            )
            with tf.GradientTape() as tape:
                tape.watch(params)
                fast = self.inner_loop(
                    params,
                    support_x,
                    support_y,
                    self.inner_steps,
                    True,
                    task_seed,
                    first_order_steps=max(0, self.inner_steps - second),
                )
                outputs = self.query_outputs(fast, support_x, query_x)
                query_loss = self.loss(outputs, query_y)
            meta_gradient = tape.gradient(
                query_loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
        return meta_gradient, query_loss, self.metric(outputs, query_y), fast


class FOMAML(MAML):
    """First-order MAML: MAML with ``first_order=True``."""

    name = "fomaml"

    def __init__(self, *args, **kwargs):
        kwargs["first_order"] = True
        super().__init__(*args, **kwargs)
