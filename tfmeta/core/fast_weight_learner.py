"""Learners whose adapted state is fast weights theta'_i over one model.

MAML, FOMAML and Reptile (and any learner that adapts the model's own
weights by inner steps) share how they adapt, predict, evaluate and serve:
an ``InnerLoop`` from theta (or from a per-task start, ``initial_weights``,
e.g. a head initialized from the support set), then the model under theta'.
They differ only in ``task_result``.

Learners with meta-parameters of their own (``own_variables``) use them
through three hooks: ``step_learning_rates`` (learned inner step sizes, e.g.
MAML++'s LSLR, Meta-SGD), ``parameters_at_step`` (parameters that differ
per inner step, e.g. per-step batch norm; the query after k steps uses those
of step k - 1, and those of the last trained step past it) and
``initial_weights`` (a per-task start).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfmeta.core import functional
from tfmeta.core.inner_loop import (
    FastWeights,
    InnerLoop,
    InnerLoss,
    SupportTask,
    check_adapt_variables,
)
from tfmeta.core.inner_optimizers import InnerAdam, InnerSGD, make_inner_optimizer
from tfmeta.core.learner import Learner


def inner_optimizer_from(
    inner_lr: float | None, inner_optimizer: InnerSGD | InnerAdam | None
) -> InnerSGD | InnerAdam:
    """The inner optimizer: ``inner_optimizer``, else SGD with alpha = ``inner_lr``.
    alpha is kept once, in the optimizer."""
    if inner_optimizer is None:
        if inner_lr is None:
            raise ValueError("give inner_lr (alpha) or an inner_optimizer")
        return make_inner_optimizer("sgd", inner_lr)
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
      transductive: False (default): queries are normalized with the support
        set's batch statistics, in meta-training as at evaluation and in an
        export, so one query's prediction does not depend on the other
        queries. True: a query batch is normalized with its own statistics
        (the MAML and Reptile code).
      unroll_inner_loop: see ``tfmeta.core.inner_loop``.
      inner_loss: your own inner objective, ``inner_loss(outputs, labels,
        fast_weights, theta) -> scalar`` (outputs ``[S, n_way]`` logits or
        ``[S, d]``, labels ``[S]`` or targets ``[S, d]``, fast_weights phi and
        theta lists aligned with ``model.trainable_variables``), e.g. a
        proximal term lambda / 2 * ||phi - theta||^2 added to the support
        loss; None (default): the problem's loss. Its dependence on theta
        reaches the meta-gradient on every path (``tfmeta.core.second_order``).
    """

    # True where step_learning_rates gives learned step sizes (set before
    # __init__ builds the inner loop).
    learned_step_sizes = False
    # How a per-task start (``initial_weights``) sets the head; "" where the
    # inner loop starts at theta.
    initial_head = ""

    def __init__(
        self,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        inner_lr: float | None = None,
        inner_optimizer: InnerSGD | InnerAdam | None = None,
        adapt_variables: str = "all",
        transductive: bool = False,
        unroll_inner_loop: bool = True,
        inner_loss: InnerLoss | None = None,
        **kwargs,
    ):
        optimizer = inner_optimizer_from(inner_lr, inner_optimizer)
        FastWeightLearner.check_arguments(adapt_variables=adapt_variables)
        super().__init__(model, outer_optimizer, **kwargs)
        self.inner = InnerLoop(
            model,
            self.objective,
            optimizer,
            adapt_variables=adapt_variables,
            unroll=unroll_inner_loop,
            inner_batch=self.inner_batch,
            step_forward=self.step_forward,
            learning_rates=(
                self.step_learning_rates if self.learned_step_sizes else None
            ),
            num_parameters=len(self.variables),
            inner_loss=inner_loss,
        )
        self.transductive = transductive

    @staticmethod
    def check_arguments(*, adapt_variables: str, **_) -> None:
        """(``Learner.check_arguments``.)"""
        check_adapt_variables(adapt_variables)

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
        initialize part of it, e.g. the head, from the support set, and then
        says how in ``initial_head``)."""
        return params

    def task_start(
        self, params: FastWeights, support_x: tf.Tensor, support_y: tf.Tensor
    ) -> tuple[FastWeights, Callable[[FastWeights], list[tf.Tensor]]]:
        """(start, to_theta): ``initial_weights`` for this task, and the map of
        a gradient at the start to one at theta (the chain rule through the
        start; the identity where the start is theta, zero for the parts of
        theta the start replaces without reading them)."""
        with tf.GradientTape() as tape:
            tape.watch(params)
            start = self.initial_weights(params, support_x, support_y)
        if start is params:
            return start, list

        def to_theta(gradient: FastWeights) -> list[tf.Tensor]:
            return tape.gradient(
                start,
                params,
                output_gradients=list(gradient),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

        return start, to_theta

    @staticmethod
    def update_end(params, start, fast) -> FastWeights:
        """What Gradient Agreement's update theta - (this) reads: theta'_i,
        or, where the inner loop starts elsewhere than theta (a per-task
        start), theta - (start - theta'_i): the inner loop's move."""
        if start is params:
            return fast
        return [p - (s - f) for p, s, f in zip(params, start, fast)]

    def forward(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        """Model outputs for ``x`` under weights ``params``."""
        return functional.forward(self.model, params, x)

    def step_forward(
        self, params, x: tf.Tensor, step, training: bool = True
    ) -> tf.Tensor:
        """The model at inner step ``step`` (an int when unrolled, a tensor in
        a ``tf.while_loop``) of meta-training (``training``) or of adaptation
        at evaluation: ``forward`` under ``parameters_at_step``."""
        return self.forward(self.parameters_at_step(params, step), x)

    def parameters_at_step(self, params, step):
        """The parameters inner step ``step`` runs the model with: ``params``
        by default; a learner with per-step parameters (``own_variables``)
        substitutes them here."""
        return params

    def step_learning_rates(self, params, step) -> list[tf.Tensor] | None:
        """Step sizes of inner step ``step``, one per adapted tensor
        (``self.inner.adapted``), taken from ``params``; None: the inner
        optimizer's fixed alpha. Used where ``learned_step_sizes`` is True."""
        return None

    def query_step(self, steps: int) -> int:
        """The per-step parameters the query uses after ``steps`` inner steps:
        those of the last step taken."""
        return max(steps - 1, 0)

    def default_seed(self) -> tf.Tensor:
        return tf.constant([self.seed, 0], tf.int64)

    def adaptation_seed(self, support_x: tf.Tensor) -> tf.Tensor:
        """The seed ``[2]`` of anything random in adapting to a task at
        evaluation and serving (e.g. Reptile's mini-batch order): the
        learner's seed by default; a learner whose adaptation is random
        derives it from the task (``content_seed``)."""
        del support_x
        return self.default_seed()

    def content_seed(self, support_x: tf.Tensor) -> tf.Tensor:
        """``[seed, h]`` with h a hash of ``support_x``'s float32 bits, so
        every task gets its own seed and the same request the same answer.
        Integer ops only, exact in any order (XLA and GPU alike): each
        element's bits and its position are reduced mod p = 2^31 - 1 before
        they multiply, so no int64 overflows."""
        prime = tf.constant(2_147_483_647, tf.int64)
        bits = tf.bitcast(tf.cast(tf.reshape(support_x, [-1]), tf.float32), tf.int32)
        bits = tf.math.floormod(tf.cast(bits, tf.int64), prime)
        positions = tf.range(1, tf.size(bits, out_type=tf.int64) + 1, dtype=tf.int64)
        weights = tf.math.floormod(positions * 2_654_435_761, prime)
        h = tf.math.floormod(
            tf.reduce_sum(tf.math.floormod(bits * weights, prime)), prime
        )
        return tf.stack([tf.constant(self.seed, tf.int64), h])

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

    def query(self, support_x, query_x, query_y, steps: int | None = None):
        """fast weights -> (query outputs, query loss), after ``steps`` inner
        steps (default: ``inner_steps``)."""
        steps = self.inner_steps if steps is None else steps

        def outputs_and_loss(fast):
            outputs = self.predict(fast, query_x, support_x, steps, training=True)
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
            start,
            support_x,
            support_y,
            steps,
            differentiable=False,
            task_seed=self.adaptation_seed(support_x),
            training=False,
        )

    def predict(
        self,
        fast_weights: Sequence[tf.Tensor],
        query_x: tf.Tensor,
        support_x: tf.Tensor | None = None,
        steps: int | None = None,
        training: bool = False,
    ) -> tf.Tensor:
        """Outputs for ``query_x [n_query, ...]`` under theta' reached by
        ``steps`` inner steps (default: ``eval_inner_steps``, as ``adapt``),
        in meta-training (``training``, the query loss) or at evaluation and
        serving. Non-transductive learners need ``support_x`` for the
        normalization statistics."""
        del training  # normalized alike in both (a learner may differ)
        steps = self.eval_inner_steps if steps is None else steps
        params = self.parameters_at_step(fast_weights, self.query_step(steps))
        return functional.predict(
            self.model, params, query_x, support_x, self.transductive
        )

    def query_outputs(self, support_x, support_y, query_x, steps: int):
        fast = self.adapt(support_x, support_y, steps)
        return self.predict(fast, query_x, support_x, steps)

    def serving_functions(self, preprocessing=None) -> dict[str, Any]:
        """With a per-task head start (``initial_head``) only ``adapt_and_predict``
        (and its image variant): theta's own head is never trained then, so
        unadapted outputs would mean nothing."""
        from tfmeta.export import signatures

        if self.initial_head:
            return signatures.adaptation_signatures(self, preprocessing)
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
        if self.initial_head:
            values["initial_head"] = self.initial_head
        outputs = int(self.model.output_shape[-1])
        key = "n_way" if self.problem == "classification" else "output_dim"
        values[key] = outputs
        return values
