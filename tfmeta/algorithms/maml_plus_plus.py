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
from tfmeta.core import fast_weight_config, functional
from tfmeta.core.algorithm import Algorithm, Config, check_finite
from tfmeta.core.executor import TaskResult
from tfmeta.core.fast_weight_learner import inner_optimizer_from
from tfmeta.core.inner_loop import SupportTask, adapted_indices, check_unrolled_steps
from tfmeta.core.second_order import MetaGradient
from tfmeta.models.batch_norm import MetaBatchNorm, collect_statistics, fixed_statistics

MIN_NON_FINAL_WEIGHT = 0.03  # times 1/S: the code's min_value_for_non_final_losses


def inner_learning_rate(kwargs) -> float:
    """alpha from the learner's arguments (the initial LSLR value)."""
    optimizer = inner_optimizer_from(
        kwargs.get("inner_lr"), kwargs.get("inner_optimizer")
    )
    return float(optimizer.learning_rate)


def importance_vector(steps: int, progress: tf.Tensor, dtype) -> tf.Tensor:
    """MSL's per-step weights ``[steps]`` at ``progress`` (fraction of the
    annealing done); the last step alone from progress 1 on."""
    progress = tf.cast(progress, dtype)
    last = tf.one_hot(steps - 1, steps, dtype=dtype)
    if steps == 1:
        return last
    floor = MIN_NON_FINAL_WEIGHT / steps
    non_final = tf.maximum(1.0 / steps - progress / steps, floor)
    final = tf.minimum(
        1.0 / steps + progress * (steps - 1) / steps, 1.0 - (steps - 1) * floor
    )
    annealed = tf.concat([tf.fill([steps - 1], non_final), [final]], axis=0)
    return tf.where(progress < 1.0, annealed, last)


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
        if multi_step_loss and multi_step_loss_steps < 1:
            raise ValueError(
                f"multi_step_loss_steps must be >= 1, got {multi_step_loss_steps}"
            )
        if first_order_steps_of_run < 0:
            raise ValueError(
                f"first_order_steps_of_run must be >= 0, got {first_order_steps_of_run}"
            )
        if not 0.0 < statistics_momentum <= 1.0:
            raise ValueError(
                f"statistics_momentum must be in (0, 1], got {statistics_momentum}"
            )
        alpha = inner_learning_rate(kwargs)
        self.multi_step_loss = multi_step_loss
        self.multi_step_loss_steps = multi_step_loss_steps
        self.learned_step_sizes = learned_step_sizes
        self.per_step_batch_norm = per_step_batch_norm
        self.first_order_steps_of_run = first_order_steps_of_run
        self.running_statistics = running_statistics
        self.statistics_momentum = statistics_momentum
        slots = max(inner_steps, 1)
        base = len(model.trainable_variables)
        own = []
        self.norm_slots = []  # (model index, own index) of each gamma/beta
        if per_step_batch_norm:
            index = {id(v): i for i, v in enumerate(model.trainable_variables)}
            for layer in model.layers:
                if isinstance(layer, MetaBatchNorm):
                    for variable in layer.trainable_variables:
                        per_step = tf.Variable(
                            tf.tile(variable.value[None], [slots, 1]),
                            name=f"{layer.name}_{variable.name}_per_step",
                        )
                        self.norm_slots.append((index[id(variable)], base + len(own)))
                        own.append(per_step)
        self.rate_offset = base + len(own)
        # alpha_{l,s}: one per adapted tensor l and step s.
        self.step_sizes = []
        if learned_step_sizes:
            dtype = model.trainable_variables[0].dtype
            adapt = kwargs.get("adapt_variables", "all")
            self.step_sizes = [
                tf.Variable(
                    tf.fill([slots], tf.constant(alpha, dtype)), name=f"alpha_{i}"
                )
                for i in adapted_indices(model, adapt)
            ]
        # BNRS: per layer, a running mean and variance [S, channels].
        self.norm_layers = [l for l in model.layers if isinstance(l, MetaBatchNorm)]
        self.running_means, self.running_variances = [], []
        if running_statistics:
            dtype = model.trainable_variables[0].dtype
            for layer in self.norm_layers:
                for value, kind, stack in (
                    (0.0, "mean", self.running_means),
                    (1.0, "variance", self.running_variances),
                ):
                    stack.append(
                        tf.Variable(
                            tf.fill([slots, layer.channels], tf.constant(value, dtype)),
                            trainable=False,
                            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                            name=f"{layer.name}_running_{kind}",
                        )
                    )
        super().__init__(
            model,
            outer_optimizer,
            inner_steps=inner_steps,
            own_variables=own + self.step_sizes,
            state_variables=self.running_means + self.running_variances,
            **kwargs,
        )
        self.first_order_gradient = MetaGradient(True)

    # ------------------------------------------------ per-step parameters
    def _slot(self, step):
        last = max(self.inner_steps, 1) - 1
        return min(step, last) if isinstance(step, int) else tf.minimum(step, last)

    def step_learning_rates(self, params, step):
        slot = self._slot(step)
        count = len(self.inner.adapted)
        rates = params[self.rate_offset : self.rate_offset + count]
        return [tf.gather(rate, slot) for rate in rates]

    def parameters_at_step(self, params, step):
        if not self.norm_slots:
            return params
        slot = self._slot(step)
        params = list(params)
        for model_index, own_index in self.norm_slots:
            params[model_index] = tf.gather(params[own_index], slot)
        return params

    # ------------------------------------------------- running statistics
    def statistics_at(self, step) -> dict:
        """The running statistics of inner step ``step``, by layer name."""
        slot = self._slot(step)
        return {
            layer.name: (tf.gather(mean, slot), tf.gather(variance, slot))
            for layer, mean, variance in zip(
                self.norm_layers, self.running_means, self.running_variances
            )
        }

    def step_forward(self, params, x, step, training=True):
        if self.running_statistics and not training:
            with fixed_statistics(self.statistics_at(step)):
                return super().step_forward(params, x, step, training)
        return super().step_forward(params, x, step, training)

    def predict(
        self, fast_weights, query_x, support_x=None, steps=None, training=False
    ):
        if not self.running_statistics or training:
            return super().predict(fast_weights, query_x, support_x, steps, training)
        steps = self.eval_inner_steps if steps is None else steps
        slot = self.query_step(steps)
        with fixed_statistics(self.statistics_at(slot)):
            return functional.forward(
                self.model, self.parameters_at_step(fast_weights, slot), query_x
            )

    def observed_statistics(self, params, support_x, support_y, task_seed):
        """One task's support-set statistics at every inner step (means, then
        variances, aligned with ``state_variables``), under the fast weights
        each step starts from; no gradient flows through them."""
        params = [tf.stop_gradient(p) for p in params]
        slots = max(self.inner_steps, 1)
        task = SupportTask(support_x, support_y, task_seed, True)
        after = self.inner.run(params, task, slots - 1, False, trajectory=True)
        means = [[] for _ in self.norm_layers]
        variances = [[] for _ in self.norm_layers]
        for step, weights in enumerate([params, *after]):
            x, _ = self.inner_batch(support_x, support_y, step, task_seed, True)
            with collect_statistics() as seen:
                self.step_forward(weights, x, step, True)
            for index, layer in enumerate(self.norm_layers):
                means[index].append(seen[layer.name][0])
                variances[index].append(seen[layer.name][1])
        return [tf.stack(m) for m in means] + [tf.stack(v) for v in variances]

    def update_state(self, statistics):
        for variable, observed in zip(self.state_variables, statistics):
            variable.assign(variable + self.statistics_momentum * (observed - variable))

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


DEFAULTS = {
    **maml.DEFAULTS,
    "multi_step_loss": True,
    "multi_step_loss_steps": 0.1,  # of the run (the code: 10 of 100 epochs)
    "learned_step_sizes": True,
    "per_step_batch_norm": True,
    "first_order_steps_of_run": 0.0,  # DA off, as the code's Omniglot configs
    "running_statistics": False,  # BNRS off: the code normalizes by batch
    "statistics_momentum": 0.1,
}


def run_steps(name: str, value, num_steps: int) -> int:
    """A schedule length in meta-steps: an int >= 0 is steps, a float in
    [0, 1) a fraction of the run (``num_steps``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(  # noqa: TRY004 (the binaries show ValueErrors as one line)
            f"{name} must be a number of steps or a fraction, got {value!r}"
        )
    check_finite(name, value)
    if isinstance(value, float) and 0.0 <= value < 1.0:
        return round(value * num_steps)
    if value < 0 or value != int(value):
        raise ValueError(
            f"{name} must be an integer >= 0 (steps) or a fraction in [0, 1), got {value!r}"
        )
    return int(value)


def _schedule(config: Config) -> tuple[int, int]:
    num_steps = int(config.get("schedule_steps") or config["num_steps"])
    msl = run_steps("multi_step_loss_steps", config["multi_step_loss_steps"], num_steps)
    first = run_steps(
        "first_order_steps_of_run", config["first_order_steps_of_run"], num_steps
    )
    return max(msl, 1), first


def check(config: Config) -> None:
    maml.check(config)
    _schedule(config)
    momentum = config["statistics_momentum"]
    check_finite("statistics_momentum", momentum)
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"statistics_momentum must be in (0, 1], got {momentum}")
    if config["multi_step_loss"] and config["recompute"]:
        raise ValueError(
            "multi_step_loss keeps every step's query loss under one tape: "
            "turn recompute off or multi_step_loss off"
        )
    if config["multi_step_loss"] or config["running_statistics"]:
        steps = int(config["inner_steps"])
        check_unrolled_steps(
            f"inner_steps={steps}",
            steps,
            " (the multi-step loss and running statistics follow every inner step)",
        )


def build(config: Config, model, outer_optimizer, problem: str) -> MAMLPlusPlus:
    msl_steps, first_order_steps = _schedule(config)
    return MAMLPlusPlus(
        model,
        outer_optimizer,
        multi_step_loss=bool(config["multi_step_loss"]),
        multi_step_loss_steps=msl_steps,
        learned_step_sizes=bool(config["learned_step_sizes"]),
        per_step_batch_norm=bool(config["per_step_batch_norm"]),
        first_order_steps_of_run=first_order_steps,
        running_statistics=bool(config["running_statistics"]),
        statistics_momentum=float(config["statistics_momentum"]),
        second_order_steps=config["second_order_steps"],
        recompute=bool(config["recompute"]),
        recompute_steps=config["recompute_steps"],
        **fast_weight_config.learner_arguments(config, problem),
    )


ALGORITHM = Algorithm(
    name="maml_plus_plus",
    learner=MAMLPlusPlus,
    defaults={**fast_weight_config.DEFAULTS, **DEFAULTS},
    check=check,
    build=build,
    summary="MAML++: multi-step loss, LSLR, per-step batch norm, DA (Antoniou et al. 2019)",
)
