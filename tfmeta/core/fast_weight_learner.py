"""Learners whose adapted state is fast weights theta'_i over one model.

MAML, FOMAML and Reptile (and any learner that adapts the model's own
weights by inner steps) share how they adapt, predict, evaluate and serve:
an ``InnerLoop`` from theta (or from a per-task start, ``initial_weights``,
e.g. a head initialized from the support set), then the model under theta'.
They differ only in ``task_result``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tfmeta.core import functional
from tfmeta.core.inner_loop import FastWeights, InnerLoop, SupportTask
from tfmeta.core.inner_optimizers import InnerAdam, InnerSGD
from tfmeta.core.learner import Learner


def inner_optimizer_from(
    inner_lr: float | None, inner_optimizer: InnerSGD | InnerAdam | None
) -> InnerSGD | InnerAdam:
    """The inner optimizer: ``inner_optimizer``, else SGD with alpha = ``inner_lr``.
    alpha is kept once, in the optimizer."""
    if inner_optimizer is None:
        if inner_lr is None:
            raise ValueError("give inner_lr (alpha) or an inner_optimizer")
        return InnerSGD(inner_lr)
    if inner_lr is not None and inner_lr != inner_optimizer.learning_rate:
        raise ValueError(
            f"inner_lr={inner_lr} differs from the inner optimizer's learning rate "
            f"{inner_optimizer.learning_rate}: give one of them"
        )
    return inner_optimizer


class FastWeightLearner(Learner):
    """A learner that adapts the model's weights by inner steps.

    Args (besides ``Learner``'s):
      inner_lr: alpha, the inner SGD step size (or give ``inner_optimizer``).
      inner_optimizer: the inner update rule (``InnerSGD``, ``InnerAdam``).
      adapt_variables: "all", or "head" (only the last layer adapts, as ANIL).
      transductive: True: a query batch is normalized with its own batch
        statistics (MAML and Reptile code). False: with the support set's, so
        one query's prediction does not depend on the other queries.
      unroll_inner_loop: see ``tfmeta.core.inner_loop``.
    """

    def __init__(
        self,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        inner_lr: float | None = None,
        inner_optimizer: InnerSGD | InnerAdam | None = None,
        adapt_variables: str = "all",
        transductive: bool = True,
        unroll_inner_loop: bool = True,
        **kwargs,
    ):
        optimizer = inner_optimizer_from(inner_lr, inner_optimizer)
        super().__init__(model, outer_optimizer, **kwargs)
        self.inner = InnerLoop(
            model,
            self.objective,
            optimizer,
            adapt_variables=adapt_variables,
            unroll=unroll_inner_loop,
            inner_batch=self.inner_batch,
            step_forward=self.step_forward,
        )
        self.transductive = transductive

    # ------------------------------------------------------------ settings
    @property
    def inner_optimizer(self) -> InnerSGD | InnerAdam:
        return self.inner.optimizer

    @property
    def inner_lr(self) -> float:
        """alpha, the inner optimizer's learning rate."""
        return self.inner.optimizer.learning_rate

    @property
    def adapt_variables(self) -> str:
        return self.inner.adapt_variables

    @property
    def unroll_inner_loop(self) -> bool:
        return self.inner.unroll

    # ----------------------------------------------------------- pieces
    def inner_batch(self, support_x, support_y, step, task_seed, training: bool):
        """The examples of inner step ``step``: the whole support set by default."""
        return support_x, support_y

    def initial_weights(
        self, params: FastWeights, support_x: tf.Tensor, support_y: tf.Tensor
    ) -> FastWeights:
        """Where the inner loop of a task starts: theta (a learner may
        initialize part of it, e.g. the head, from the support set)."""
        return params

    def forward(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """Model outputs for ``x`` under weights ``params``."""
        return functional.forward(self.model, params, x)

    def step_forward(self, params, x: tf.Tensor, step) -> tf.Tensor:
        """The model at inner step ``step`` (an int when unrolled, a tensor in
        a ``tf.while_loop``): ``forward`` at every step by default; a learner
        with per-step parameters (``own_variables``) picks them here."""
        return self.forward(params, x)

    def default_seed(self) -> tf.Tensor:
        return tf.constant([self.seed, 0], tf.int64)

    def inner_loop(
        self,
        params,
        support_x,
        support_y,
        steps: int,
        differentiable: bool,
        task_seed: tf.Tensor | None = None,
        training: bool = True,
        first_order_steps: int = 0,
    ) -> FastWeights:
        """theta' after ``steps`` inner updates from ``params`` on the support set."""
        seed = self.default_seed() if task_seed is None else task_seed
        task = SupportTask(support_x, support_y, seed, training)
        return self.inner.run(params, task, steps, differentiable, first_order_steps)

    def query(self, support_x, query_x, query_y):
        """fast weights -> (query outputs, query loss)."""

        def outputs_and_loss(fast):
            outputs = self.predict(fast, query_x, support_x)
            return outputs, self.loss(outputs, query_y)

        return outputs_and_loss

    # ------------------------------------------------- public interface
    def adapt(
        self, support_x: tf.Tensor, support_y: tf.Tensor, inner_steps: int | None = None
    ) -> FastWeights:
        """theta' for one task: ``support_x [n_way * k_shot, ...]``, ``support_y [n_way * k_shot]``.

        Runs ``eval_inner_steps`` (or ``inner_steps``) from the current theta;
        the model's variables are not changed.
        """
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        start = self.initial_weights(self.parameters(), support_x, support_y)
        return self.inner_loop(
            start, support_x, support_y, steps, differentiable=False, training=False
        )

    def predict(
        self,
        fast_weights: Sequence[tf.Tensor],
        query_x: tf.Tensor,
        support_x: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Outputs for ``query_x [n_query, ...]`` under theta'. Non-transductive
        learners need ``support_x`` for the normalization statistics."""
        return functional.predict(
            self.model, fast_weights, query_x, support_x, self.transductive
        )

    def eval_task(self, support_x, support_y, query_x, query_y, steps: int):
        fast = self.adapt(support_x, support_y, steps)
        outputs = self.predict(fast, query_x, support_x)
        return self.loss(outputs, query_y), self.metric(outputs, query_y)

    def serving_functions(self, preprocessing=None) -> dict[str, Any]:
        from tfmeta.export import signatures

        if self.problem == "classification":
            return signatures.classification_signatures(self, preprocessing)
        return signatures.regression_signatures(self, preprocessing)

    def describe(self) -> dict[str, Any]:
        values = {
            **super().describe(),
            "input_shape": [int(d) for d in self.model.input_shape[1:]],
            "inner_steps": int(self.eval_inner_steps),
            **self.inner_optimizer.describe(),
            "adapt_variables": self.adapt_variables,
        }
        outputs = int(self.model.output_shape[-1])
        key = "n_way" if self.problem == "classification" else "output_dim"
        values[key] = outputs
        return values
