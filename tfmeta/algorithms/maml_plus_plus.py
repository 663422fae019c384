"""MAML++ (Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019).

MAML (``tfmeta.algorithms.maml``) with five fixes, each a switch so that it
can be ablated:

- multi-step loss (MSL): the meta-loss is sum_s v_s L(theta'_s; D^val) over
  the query losses after every inner step s = 1..S, with the importance
  vector v annealed towards the last step: for progress p = step /
  ``multi_step_loss_steps`` < 1, v_s = max(1/S - p/S, 0.03/S) for s < S and
  v_S = min(1/S + p (S-1)/S, 1 - 0.03 (S-1)/S); from p = 1 on, the last
  step's loss alone (the authors' ``get_per_step_loss_importance_vector``,
  with their epoch counter made continuous).
- LSLR: a learned inner learning rate alpha_{l,s} per adapted tensor l
  (weights and biases separately, as the code's per-parameter dict) and per
  step s, initialized to ``inner_lr``.
- per-step batch norm (BNWB): gamma and beta of every batch-norm layer per
  inner step, ``[S, channels]``, meta-learned; the query after step s uses
  step s's (as the code). Normalization layers do not adapt in the inner loop
  (``adapt_variables="all_but_norm"``, the code's default).
- derivative-order annealing (DA): first-order meta-gradients for the first
  ``first_order_steps_of_run`` meta-steps, then second order (a ``tf.cond`` on
  the outer step, so no host sync and both orders compiled once).
- cosine annealing of the outer learning rate beta (the ``cosine_adam``
  outer optimizer, ``tfmeta.core.outer_optimizers``).
- per-step running statistics (BNRS, ``running_statistics``): each
  batch-norm layer keeps a running mean and variance per inner step,
  ``[S, channels]``, moved after every outer update towards the meta-batch's
  mean of the support set's statistics at that step (momentum
  ``statistics_momentum``, 0.1 as PyTorch's default the code uses); adapting
  and predicting at evaluation and serving normalize with them, so no
  prediction depends on other examples' statistics. Meta-training normalizes
  with batch statistics as without them.

Evaluation with more inner steps than training reuses the last trained step's
learning rates, batch-norm parameters and running statistics (the code would
index past them). Where the paper and the code differ: the code always
normalizes with batch statistics, at evaluation too (the paper describes
per-step running statistics); here normalization follows the learner's
``transductive`` setting (support-set statistics when it is False) unless
``running_statistics`` is on. The statistics a step observes are those of
the support set under the fast weights that step starts from, gathered by a
pass of the inner loop with no gradient through it (about S forward and
backward passes more per task); the query after the last step is normalized
with the last step's. The code counts 500 iterations per epoch; schedules
here are in meta-steps or fractions of the run.

  python -m experiments.train --algorithm=maml_plus_plus --dataset=omniglot \
      --workdir=/tmp/tfmeta_runs/maml_plus_plus
"""

from __future__ import annotations

import tensorflow as tf

from tfmeta.algorithms import maml
from tfmeta.checks import check_finite
from tfmeta.core import functional
from tfmeta.core.algorithm import Algorithm, run_fraction
from tfmeta.core.executor import TaskResult
from tfmeta.core.fast_weight_learner import inner_optimizer_from
from tfmeta.core.inner_loop import SupportTask, adapted_indices, check_unrolled_steps
from tfmeta.core.second_order import MetaGradient, importance_vector
from tfmeta.models.batch_norm import collect_statistics, fixed_statistics
from tfmeta.models.per_step_batch_norm import PerStepBatchNorm


class MAMLPlusPlus(maml.MAML):
    """MAML++. Switches: ``multi_step_loss`` (with ``multi_step_loss_steps``,
    the annealing length in meta-steps), ``learned_step_sizes`` (LSLR),
    ``per_step_batch_norm``, ``first_order_steps_of_run`` (DA; 0: off),
    ``running_statistics`` (BNRS, with ``statistics_momentum``).
    Other arguments: ``MAML`` (``first_order`` turns DA's second phase first
    order too)."""

    name = "maml_plus_plus"

    def __init__(
        self,
        model,
        outer_optimizer,
        *,
        multi_step_loss: bool = True,
        multi_step_loss_steps: int = 5000,
        learned_step_sizes: bool = True,
        per_step_batch_norm: bool = True,
        first_order_steps_of_run: int = 0,
        running_statistics: bool = False,
        statistics_momentum: float = 0.1,
        inner_steps: int = 5,
        **kwargs,
    ):
        MAMLPlusPlus.check_arguments(
            multi_step_loss=multi_step_loss,
            multi_step_loss_steps=multi_step_loss_steps,
            first_order_steps_of_run=first_order_steps_of_run,
            running_statistics=running_statistics,
            statistics_momentum=statistics_momentum,
            recompute=kwargs.get("recompute", False),
            inner_steps=inner_steps,
        )
        alpha = inner_optimizer_from(
            kwargs.get("inner_lr"), kwargs.get("inner_optimizer")
        ).learning_rate
        self.multi_step_loss = multi_step_loss
        self.multi_step_loss_steps = multi_step_loss_steps
        self.learned_step_sizes = learned_step_sizes
        self.per_step_batch_norm = per_step_batch_norm
        self.first_order_steps_of_run = first_order_steps_of_run
        self.running_statistics = running_statistics
        self.statistics_momentum = statistics_momentum
        self.per_step = PerStepBatchNorm(
            model, inner_steps, per_step_batch_norm, running_statistics
        )
        # alpha_{l,s}: one per adapted tensor l and step s.
        alpha = tf.constant(float(alpha), model.trainable_variables[0].dtype)
        adapted = adapted_indices(model, kwargs.get("adapt_variables", "all"))
        self.step_sizes = [
            tf.Variable(tf.fill([self.per_step.steps], alpha), name=f"alpha_{i}")
            for i in (adapted if learned_step_sizes else ())
        ]
        self.rate_offset = len(model.trainable_variables) + len(
            self.per_step.parameters
        )
        super().__init__(
            model,
            outer_optimizer,
            inner_steps=inner_steps,
            own_variables=self.per_step.parameters + self.step_sizes,
            state_variables=self.per_step.statistics_variables,
            **kwargs,
        )
        self.first_order_gradient = MetaGradient(True)

    @staticmethod
    def check_arguments(
        *,
        multi_step_loss,
        multi_step_loss_steps,
        first_order_steps_of_run,
        running_statistics,
        statistics_momentum,
        recompute,
        inner_steps,
        **_,
    ) -> None:
        """(``tfmeta.core.Learner.check_arguments``.)"""
        if multi_step_loss and multi_step_loss_steps < 1:
            raise ValueError(
                f"multi_step_loss_steps must be >= 1, got {multi_step_loss_steps}"
            )
        if first_order_steps_of_run < 0:
            raise ValueError(
                f"first_order_steps_of_run must be >= 0, got {first_order_steps_of_run}"
            )
        check_finite("statistics_momentum", statistics_momentum)
        if not 0.0 < statistics_momentum <= 1.0:
            raise ValueError(
                f"statistics_momentum must be in (0, 1], got {statistics_momentum}"
            )
        if multi_step_loss and recompute:
            raise ValueError(
                "multi_step_loss keeps every step's query loss under one tape: "
                "turn recompute off or multi_step_loss off"
            )
        if multi_step_loss or running_statistics:
            check_unrolled_steps(
                f"inner_steps={inner_steps}",
                inner_steps,
                " (the multi-step loss and running statistics follow every inner step)",
            )

    # ------------------------------------------------ per-step parameters
    @property
    def norm_slots(self) -> list[tuple[int, int]]:
        """(model index, own index) of each per-step gamma and beta."""
        base = len(self.model.trainable_variables)
        return [(m, base + i) for i, m in enumerate(self.per_step.model_indices)]

    def step_learning_rates(self, params, step):
        slot = self.per_step.slot(step)
        count = len(self.inner.adapted)
        rates = params[self.rate_offset : self.rate_offset + count]
        return [tf.gather(rate, slot) for rate in rates]

    def parameters_at_step(self, params, step):
        if not self.per_step.parameters:
            return params
        own = params[len(self.model.trainable_variables) : self.rate_offset]
        return self.per_step.substitute(params, own, step)

    # ------------------------------------------------- running statistics
    def step_forward(self, params, x, step, training=True):
        if self.running_statistics and not training:
            with fixed_statistics(self.per_step.statistics_at(step)):
                return super().step_forward(params, x, step, training)
        return super().step_forward(params, x, step, training)

    def predict(
        self, fast_weights, query_x, support_x=None, steps=None, training=False
    ):
        if not self.running_statistics or training:
            return super().predict(fast_weights, query_x, support_x, steps, training)
        steps = self.eval_inner_steps if steps is None else steps
        slot = self.query_step(steps)
        with fixed_statistics(self.per_step.statistics_at(slot)):
            return functional.forward(
                self.model, self.parameters_at_step(fast_weights, slot), query_x
            )

    def observed_statistics(self, params, support_x, support_y, task_seed):
        """One task's support-set statistics at every inner step (means, then
        variances, aligned with ``state_variables``), under the fast weights
        each step starts from; no gradient flows through them."""
        params = [tf.stop_gradient(p) for p in params]
        slots = self.per_step.steps
        task = SupportTask(support_x, support_y, task_seed, True)
        after = self.inner.run(params, task, slots - 1, False, trajectory=True)
        means = [[] for _ in self.per_step.layers]
        variances = [[] for _ in self.per_step.layers]
        for step, weights in enumerate([params, *after]):
            x, _ = self.inner_batch(support_x, support_y, step, task_seed, True)
            with collect_statistics() as seen:
                self.step_forward(weights, x, step, True)
            for index, layer in enumerate(self.per_step.layers):
                means[index].append(seen[layer.name][0])
                variances[index].append(seen[layer.name][1])
        return [tf.stack(m) for m in means] + [tf.stack(v) for v in variances]

    def update_state(self, statistics):
        self.per_step.update(statistics, self.statistics_momentum)

    # ------------------------------------------------------- one task
    def step_weights(self) -> tf.Tensor:
        """The MSL importance vector at the current outer step."""
        dtype = self.model.trainable_variables[0].dtype
        progress = tf.cast(self.outer_optimizer.iterations, dtype) / float(
            self.multi_step_loss_steps
        )
        return importance_vector(self.inner_steps, progress, dtype)

    def _task(self, gradient, support_x, support_y, query_x, query_y, task_seed):
        params = self.parameters()
        task = SupportTask(support_x, support_y, task_seed, True)
        if self.multi_step_loss:
            return gradient.multi_step(
                self.inner,
                params,
                task,
                self.inner_steps,
                lambda steps: self.query(support_x, query_x, query_y, steps),
                self.step_weights(),
            )
        return gradient(
            self.inner,
            params,
            task,
            self.inner_steps,
            self.query(support_x, query_x, query_y),
        )

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        task = (support_x, support_y, query_x, query_y, task_seed)
        if self.first_order_steps_of_run and not self.first_order:
            meta_gradient, loss, outputs, fast = tf.cond(
                self.outer_optimizer.iterations < self.first_order_steps_of_run,
                lambda: self._task(self.first_order_gradient, *task),
                lambda: self._task(self.meta_gradient, *task),
            )
        else:
            meta_gradient, loss, outputs, fast = self._task(self.meta_gradient, *task)
        statistics = (
            self.observed_statistics(self.parameters(), support_x, support_y, task_seed)
            if self.state_variables
            else None
        )
        return TaskResult(
            meta_gradient, loss, self.metric(outputs, query_y), fast, None, statistics
        )

    def describe(self):
        return {
            **super().describe(),
            "learned_step_sizes": self.learned_step_sizes,
            "per_step_batch_norm": self.per_step_batch_norm,
            "running_statistics": self.running_statistics,
        }


ALGORITHM = Algorithm(
    name="maml_plus_plus",
    learner=MAMLPlusPlus,
    exclude=("first_order",),
    conversions={
        # MSL's annealing: of the run (the code: 10 of 100 epochs).
        "multi_step_loss_steps": run_fraction("multi_step_loss_steps", 0.1, minimum=1),
        # DA off, as the code's Omniglot configs.
        "first_order_steps_of_run": run_fraction("first_order_steps_of_run", 0.0),
    },
    summary="MAML++: multi-step loss, LSLR, per-step batch norm, DA (Antoniou et al. 2019)",
)
