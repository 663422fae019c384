"""MAML (Finn, Abbeel and Levine, ICML 2017) and its first-order variant.

For task i with support set D_i^tr and query set D_i^val,
  theta'_i = theta - alpha * grad_theta L(theta; D_i^tr)       (inner_steps times)
and the meta-objective is sum_i L(theta'_i; D_i^val). Its gradient
  d L(theta'_i; D^val) / d theta = (d theta'_i / d theta)^T grad L(theta'_i; D^val)
holds second derivatives through d theta'_i / d theta: computed exactly by
differentiating the inner loop (``tfmeta.core.second_order``: stored, or
recomputed to save memory, or second order through the last steps only).
First-order MAML (FOMAML) drops them, d theta'_i / d theta = I, so the
meta-gradient is the query-loss gradient at the adapted weights.

  python -m experiments.train --algorithm=maml --dataset=omniglot --workdir=/tmp/maml
"""

from __future__ import annotations

from typing import Any

from tfmeta.checks import check_optional_count
from tfmeta.core.algorithm import Algorithm
from tfmeta.core.executor import TaskResult
from tfmeta.core.fast_weight_learner import FastWeightLearner
from tfmeta.core.inner_loop import SupportTask, check_unrolled_steps
from tfmeta.core.second_order import MetaGradient


class MAML(FastWeightLearner):
    """MAML; ``first_order=True`` gives FOMAML.

    ``second_order_steps``: differentiate through the second derivatives of
    only the last this many inner steps (None: all). ``recompute``: keep only
    each inner step's parameters and recompute its activations in the
    backward pass; ``recompute_steps``: recompute only the first this many
    steps (unrolled inner loop). The meta-gradient is the same in every case
    (``tfmeta.core.second_order``). Other arguments: ``FastWeightLearner``.
    """

    name = "maml"

    def __init__(
        self,
        *args,
        first_order: bool = False,
        second_order_steps: int | None = None,
        recompute: bool = False,
        recompute_steps: int | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.meta_gradient = MAML.check_arguments(
            first_order=first_order,
            second_order_steps=second_order_steps,
            recompute=recompute,
            recompute_steps=recompute_steps,
            unroll_inner_loop=self.unroll_inner_loop,
            inner_steps=self.inner_steps,
        )

    @staticmethod
    def check_arguments(
        *,
        first_order,
        second_order_steps,
        recompute,
        recompute_steps,
        unroll_inner_loop,
        inner_steps,
        **_,
    ) -> MetaGradient:
        """(``tfmeta.core.Learner.check_arguments``.) The meta-gradient's
        form, checked."""
        check_optional_count("second_order_steps", second_order_steps)
        meta_gradient = MetaGradient(
            first_order, second_order_steps, recompute, recompute_steps
        )
        if recompute_steps is not None and not unroll_inner_loop and inner_steps > 1:
            raise ValueError(
                "recompute_steps applies to the unrolled inner loop: with "
                "unroll_inner_loop=False every inner step is recomputed"
            )
        if not first_order and unroll_inner_loop:
            check_unrolled_steps(
                f"inner_steps={inner_steps}",
                inner_steps,
                "; use unroll_inner_loop=False (a tf.while_loop: a flat graph, the "
                "same meta-gradient) or fewer steps",
            )
        return meta_gradient

    @property
    def first_order(self) -> bool:
        return self.meta_gradient.first_order

    @property
    def recompute(self) -> bool:
        return self.meta_gradient.recompute

    @property
    def recompute_steps(self) -> int | None:
        return self.meta_gradient.recompute_steps

    @property
    def second_order_steps(self) -> int | None:
        return self.meta_gradient.second_order_steps

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        params = self.parameters()
        start, to_theta = self.task_start(params, support_x, support_y)
        meta_gradient, loss, outputs, fast = self.meta_gradient(
            self.inner,
            start,
            SupportTask(support_x, support_y, task_seed, True),
            self.inner_steps,
            self.query(support_x, query_x, query_y),
        )
        update_end = self.update_end(params, start, fast)
        return TaskResult(
            to_theta(meta_gradient), loss, self.metric(outputs, query_y), update_end
        )


class TaskStartMAML(MAML):
    """MAML whose inner loop starts every task at a head set for that task
    (``initial_weights``: Proto-MAML's prototypes, UNICORN-MAML's shared
    start; ``initial_head`` says how): theta's own head is never used, so the
    export serves adaptation only (``FastWeightLearner``)."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "first_order": bool(self.first_order)}


class FOMAML(MAML):
    """First-order MAML: MAML with ``first_order=True``."""

    name = "fomaml"

    def __init__(self, *args, first_order: bool = True, **kwargs):
        if not first_order:
            raise ValueError("fomaml is first order: for second order build MAML")
        super().__init__(*args, first_order=True, **kwargs)


MAML_ALGORITHM = Algorithm(
    name="maml",
    learner=MAML,
    exclude=("first_order",),  # fomaml is the first-order one
    summary="MAML with exact second-order meta-gradients (Finn et al. 2017)",
)
FOMAML_ALGORITHM = Algorithm(
    name="fomaml",
    learner=FOMAML,
    exclude=("first_order", "second_order_steps", "recompute", "recompute_steps"),
    summary="first-order MAML",
)
