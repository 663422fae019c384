"""The inner loop: theta -> theta'_i on one task's support set, functionally.

theta'_i is reached by ``steps`` updates of an inner optimizer (SGD with
alpha by default) on the support loss, starting from theta (or from a
per-task start, ``start``). Only the adapted tensors move (all of theta, or
the head alone as in ANIL); the others are held at theta. Fast weights are
lists of tensors aligned with ``model.trainable_variables``.

The support loss of a step is the problem's (``Problem.loss``) or, given
``inner_loss``, the user's own objective of the outputs, the labels, the
fast weights phi and theta (the weights the loop starts from), for instance
iMAML's proximal one, L(phi; D^tr) + lambda / 2 * ||phi - theta||^2. Its
explicit dependence on theta is part of each step's map (phi, theta) ->
phi', so every meta-gradient path carries it (``tfmeta.core.second_order``).

Unrolled or looped: a loop that an enclosing tape differentiates
(second-order MAML) is unrolled in Python, one copy of the step per inner
step in the graph, or with ``unroll=False`` runs in a differentiated
``tf.while_loop`` (flat graph, same meta-gradient). A loop with no gradient
through it runs in a ``tf.while_loop``, except under XLA on a CPU-only
machine, where a while loop's convolutions run many times slower (FOMAML at
20-way, 5 steps: 12.8 s against 1.3 s per meta-step): there loops of up to
``XLA_CPU_UNROLL_MAX_STEPS`` steps are unrolled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import keras
import tensorflow as tf

from tfmeta.core import functional
from tfmeta.core.inner_optimizers import InnerAdam, InnerSGD
from tfmeta.core.problem import Problem
from tfmeta.models.batch_norm import MetaBatchNorm
from tfmeta.models.kernels import tracing_for_xla

FastWeights = list[tf.Tensor]
# (outputs, labels, fast_weights phi, theta) -> scalar support loss
InnerLoss = Callable[
    [tf.Tensor, tf.Tensor, list[tf.Tensor], list[tf.Tensor]], tf.Tensor
]
ADAPT_VARIABLES = ("all", "head", "all_but_norm")
XLA_CPU_UNROLL_MAX_STEPS = 10
# Bounds on a run's settings (checked with its config): adaptation longer
# than MAX_INNER_STEPS takes minutes per task; an unrolled loop of more than
# MAX_UNROLLED_STEPS copies of the step takes more than ~10 minutes to build
# and optimize (second-order MAML, conv4: 12 s at 10 steps, 123 s at 40).
MAX_INNER_STEPS = 10_000
MAX_UNROLLED_STEPS = 100


def unroll_for_xla_cpu(steps: int) -> bool:
    """True while tracing for XLA on a CPU-only machine, for short loops."""
    if steps > XLA_CPU_UNROLL_MAX_STEPS or tf.config.list_physical_devices("GPU"):
        return False
    return tracing_for_xla()


def check_inner_step_bound(name: str, steps: int) -> None:
    """Raises ValueError for more than ``MAX_INNER_STEPS`` inner steps."""
    if steps > MAX_INNER_STEPS:
        raise ValueError(
            f"{name} must be at most {MAX_INNER_STEPS} (minutes of adaptation per "
            f"task beyond), got {steps}"
        )


def check_unrolled_steps(what: str, steps: int, alternative: str = "") -> None:
    """Raises ValueError, naming ``what`` (e.g. "inner_steps=500"), for an
    unrolled loop of more than ``MAX_UNROLLED_STEPS`` steps; ``alternative``
    says what to do instead."""
    if steps > MAX_UNROLLED_STEPS:
        raise ValueError(
            f"{what}: an unrolled inner loop of {steps} steps puts one copy of the "
            f"step in the graph each, at most {MAX_UNROLLED_STEPS} (building "
            f"more takes more than minutes){alternative}"
        )


def check_adapt_variables(adapt_variables: str) -> None:
    if adapt_variables not in ADAPT_VARIABLES:
        raise ValueError(
            f"adapt_variables must be one of {ADAPT_VARIABLES}, got {adapt_variables!r}"
        )


def adapted_indices(model: keras.Model, adapt_variables: str) -> list[int]:
    """Indices in ``model.trainable_variables`` of the tensors that adapt."""
    check_adapt_variables(adapt_variables)
    variables = list(model.trainable_variables)
    if adapt_variables == "all":
        return list(range(len(variables)))
    if adapt_variables == "all_but_norm":
        norm_ids = {
            id(v)
            for layer in model.layers
            if isinstance(layer, MetaBatchNorm)
            for v in layer.trainable_variables
        }
        return [i for i, v in enumerate(variables) if id(v) not in norm_ids]
    head = [layer for layer in model.layers if layer.trainable_variables][-1]
    head_ids = {id(v) for v in head.trainable_variables}
    return [i for i, v in enumerate(variables) if id(v) in head_ids]


class SupportTask(NamedTuple):
    """What an inner step sees of a task: its support set, a seed ``[2]`` for
    anything random in it, and whether it is meta-training."""

    support_x: tf.Tensor
    support_y: tf.Tensor
    seed: tf.Tensor
    training: bool


def whole_support_set(support_x, support_y, step, task_seed, training):
    """The examples of every inner step: the whole support set."""
    return support_x, support_y


class InnerLoop:
    """Inner updates of fast weights over one Keras model.

    Args:
      model: a built Keras model, only ever called through ``stateless_call``.
      problem: the support loss.
      optimizer: the inner update rule (``InnerSGD(alpha)``, ``InnerAdam``).
      adapt_variables: "all", "head" (only the last layer with weights, as
        ANIL) or "all_but_norm" (all but normalization layers' scale and
        offset, as MAML++'s code).
      unroll: see the module docstring.
      inner_batch: ``(support_x, support_y, step, task_seed, training) ->
        (x, y)``, the examples of inner step ``step`` (default: all).
      step_forward: ``(params, x, step, training) -> outputs``, the model at
        inner step ``step`` (default: the same model at every step; a learner
        with per-step parameters, e.g. per-step batch norm, picks them here,
        and ``training`` tells meta-training from adaptation at evaluation).
      learning_rates: ``(params, step) -> [rate per adapted tensor] | None``,
        learned step sizes taken from theta (LSLR, Meta-SGD); None (or a
        None result): the optimizer's fixed alpha.
      num_parameters: the length of theta (the model's trainable variables
        and the learner's own meta-parameters after them); default: the
        model's. Every tensor that does not adapt is "fixed".
    """

    def __init__(
        self,
        model: keras.Model,
        problem: Problem,
        optimizer: InnerSGD | InnerAdam,
        *,
        adapt_variables: str = "all",
        unroll: bool = True,
        inner_batch: Callable = whole_support_set,
        step_forward: Callable | None = None,
        learning_rates: Callable | None = None,
        num_parameters: int | None = None,
        inner_loss: InnerLoss | None = None,
    ):
        if inner_loss is not None and not callable(inner_loss):
            raise ValueError(
                "inner_loss must be a callable (outputs, labels, fast_weights, "
                f"theta) -> scalar, or None, got {inner_loss!r}"
            )
        self.inner_loss = inner_loss
        self.model = model
        self.problem = problem
        self.optimizer = optimizer
        self.adapt_variables = adapt_variables
        self.unroll = unroll
        self.inner_batch = inner_batch
        self.step_forward = step_forward or (
            lambda params, x, step, training: self.forward(params, x)
        )
        self.learns_rates = learning_rates is not None
        self.learning_rates = learning_rates or (lambda params, step: None)
        variables = list(model.trainable_variables)
        self.adapted = adapted_indices(model, adapt_variables)
        adapted = set(self.adapted)
        count = len(variables) if num_parameters is None else num_parameters
        self.fixed = [i for i in range(count) if i not in adapted]
        self.model_size = len(variables)
        # The tensors of theta that one step reads explicitly (beside the
        # adapted phi it maps): the fixed ones, and all of theta under an
        # inner loss (its theta argument, e.g. a proximal term).
        self.explicit = self.fixed if inner_loss is None else list(range(count))

    def forward(self, params: Sequence[tf.Tensor], x: tf.Tensor) -> tf.Tensor:
        return functional.forward(self.model, params, x)

    def merge(
        self, params: Sequence[tf.Tensor], adapted: Sequence[tf.Tensor]
    ) -> FastWeights:
        """``params`` with the adapted tensors replaced by ``adapted``."""
        merged = list(params)
        for index, value in zip(self.adapted, adapted):
            merged[index] = value
        return merged

    def step(
        self,
        params: Sequence[tf.Tensor],
        adapted: list[tf.Tensor],
        state,
        step,
        task: SupportTask,
        first_order: bool = False,
    ):
        """One inner update of the adapted tensors: (adapted', state').

        ``params`` gives the tensors that do not adapt. ``first_order`` stops
        the gradient of the inner gradient (its second derivatives).
        """
        support_x, support_y, task_seed, training = task
        x, y = self.inner_batch(support_x, support_y, step, task_seed, training)
        with tf.GradientTape() as tape:
            tape.watch(adapted)
            fast = self.merge(params, adapted)
            outputs = self.step_forward(fast, x, step, training)
            loss = self.support_loss(outputs, y, fast, params)
        grads = tape.gradient(
            loss, adapted, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        rates = self.learning_rates(params, step)
        return self.optimizer.update(adapted, grads, state, step, rates)

    def support_loss(self, outputs, y, fast, params) -> tf.Tensor:
        """The loss an inner step descends: ``problem.loss(outputs, y)``, or
        ``inner_loss(outputs, y, phi, theta)`` over the model's variables."""
        if self.inner_loss is None:
            return self.problem.loss(outputs, y)
        n = self.model_size
        return self.inner_loss(outputs, y, list(fast[:n]), list(params[:n]))

    def run(
        self,
        params: Sequence[tf.Tensor],
        task: SupportTask,
        steps: int,
        differentiable: bool,
        first_order_steps: int = 0,
        trajectory: bool = False,
    ) -> FastWeights | list[FastWeights]:
        """theta' after ``steps`` inner updates from ``params``.

        ``differentiable``: an enclosing tape sees theta' as a function of
        theta; the first ``first_order_steps`` steps stop the gradient of
        their inner gradient (first order for those steps only).
        ``trajectory``: return the fast weights after every step
        (``steps`` lists; the loop is then unrolled).
        """
        params = list(params)
        adapted = [params[i] for i in self.adapted]
        state = self.optimizer.init(adapted)
        unroll = self.unroll and (differentiable or unroll_for_xla_cpu(steps))
        if unroll or trajectory:
            after = []
            for step in range(steps):
                adapted, state = self.step(
                    params, adapted, state, step, task, step < first_order_steps
                )
                after.append(self.merge(params, adapted))
            return after if trajectory else self.merge(params, adapted)
        # First-order steps, then second-order ones: one tf.while_loop each.
        first = min(first_order_steps, steps)
        for start, end, first_order in ((0, first, True), (first, steps, False)):
            if end > start:
                _, adapted, state = tf.while_loop(
                    lambda step, *_, end=end: step < end,
                    lambda step, adapted, state, first_order=first_order: (
                        step + 1,
                        *self.step(params, adapted, state, step, task, first_order),
                    ),
                    (tf.constant(start), adapted, state),
                    maximum_iterations=end - start,
                )
        return self.merge(params, adapted)
