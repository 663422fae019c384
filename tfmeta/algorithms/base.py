"""The learner interface shared by every gradient-based meta-learner.

Notation (Finn et al. 2017): theta are the meta-parameters (the model's
trainable variables), theta'_i the fast weights after adapting to task i with
inner learning rate alpha, beta the outer (meta) learning rate held by the
outer Keras optimizer. Every learner forms, per task of a meta-batch, a
``TaskResult``: a meta-gradient for theta and the task's update vector
theta - theta'_i. The learners differ only in ``task_result``; the tasks'
meta-gradients are combined by one task weighting (uniform mean by default)
and applied by the outer optimizer.

Execution: a meta-train step is one ``tf.function`` (XLA with
``jit_compile=True``). Inside it each task runs through one per-task function
traced once and not inlined. ``task_execution`` says how it is called:
"loop" puts one call op per task in the graph (the tasks' calls run in
parallel on the inter-op pool; tracing and graph optimization grow with the
meta-batch, ~0.15 s per task); "map_fn" calls it from one ``tf.map_fn`` over
the stacked tasks, a graph of the same size for every meta-batch (flat
compile time) with the per-task results kept stacked ``[B, ...]``. The
learners' code uses Python control flow only where it is meant to unroll and
``tf.while_loop`` where it is not, so these functions are traced without
AutoGraph (its source transformation took ~2-3 s of a 20-way trace).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import keras
import tensorflow as tf

from tfmeta.algorithms import weighting
from tfmeta.algorithms.inner_optimizers import InnerAdam, InnerSGD
from tfmeta.models.batch_norm import (
    native_kernels,
    normalization_reference,
    tracing_for_xla,
)

FastWeights = list[tf.Tensor]
PROBLEMS = ("classification", "regression")
ADAPT_VARIABLES = ("all", "head")
TASK_EXECUTIONS = ("loop", "map_fn")
# XLA on CPU runs the convolutions of a while-loop body many times slower
# than the same steps unrolled (FOMAML at 20-way, 5 steps: 12.8 s against
# 1.3 s per meta-step), so under XLA on a CPU-only machine inner loops with
# no gradient through them are unrolled up to this many steps.
XLA_CPU_UNROLL_MAX_STEPS = 10


def _unroll_for_xla_cpu(steps: int) -> bool:
    """True while tracing for XLA on a CPU-only machine, for short loops."""
    if steps > XLA_CPU_UNROLL_MAX_STEPS or tf.config.list_physical_devices("GPU"):
        return False
    return tracing_for_xla()


class TaskResult(NamedTuple):
    """Per-task outcome of a meta-train step (lists align with ``model.trainable_variables``)."""

    meta_gradient: list[tf.Tensor]  # this task's contribution to d(meta-loss)/d(theta)
    update: list[tf.Tensor]  # theta - theta'_i
    query_loss: tf.Tensor  # scalar, query loss after adaptation
    query_metric: tf.Tensor  # scalar, accuracy (classification) or MSE (regression)


def _per_task_function(fn: Callable) -> Callable:
    # Traced once; every call in the meta-step is a call op, not an inlined copy.
    return tf.function(
        fn,
        experimental_attributes={"_noinline": True},
        reduce_retracing=False,
        autograph=False,
    )


def _per_task(*tensors: tf.Tensor) -> list[tuple[tf.Tensor, ...]]:
    """Task i's slice of each ``[B, ...]`` tensor, for i < B: one Unpack per
    tensor, not a strided slice (and its constants) per task and tensor."""
    tasks = int(tensors[0].shape[0])
    return list(zip(*(tf.unstack(t, num=tasks) for t in tensors)))


def _with_native_kernels(step: Callable) -> Callable:
    """``step`` traced within ``native_kernels``: a meta-train step (never
    exported) may use the native batch-norm kernel."""

    @functools.wraps(step)
    def traced(*args, **kwargs):
        with native_kernels():
            return step(*args, **kwargs)

    return traced


class MetaLearner:
    """Base class: inner loop, compiled meta-train/eval steps, task weighting.

    Args:
      model: a built Keras 3 model mapping ``[batch, ...]`` inputs to logits
        ``[batch, n_way]`` (classification) or ``[batch, d]`` (regression). It is
        only ever called through ``stateless_call``: layers must not keep state
        between calls that matters for the result (use ``MetaBatchNorm``, not
        Keras ``BatchNormalization`` whose moving averages are discarded here).
      outer_optimizer: Keras optimizer applying the combined meta-gradient
        (beta in the MAML paper is its learning rate).
      inner_lr: alpha, step size of the inner loop.
      inner_steps: inner steps during meta-training.
      eval_inner_steps: inner steps at meta-validation/test time.
      problem: "classification" (softmax cross-entropy, accuracy) or
        "regression" (mean squared error).
      adapt_variables: "all", or "head" (only the last layer adapts, as ANIL).
      transductive: True: a query batch is normalized with its own batch
        statistics (MAML and Reptile code). False: queries are normalized with
        the support set's statistics, so one query's prediction does not depend
        on the other queries.
      task_weighting: how per-task meta-gradients are combined
        (``weighting.TASK_WEIGHTINGS``).
      jit_compile: compile the meta-steps with XLA.
      task_execution: "loop" or "map_fn", how the per-task function runs over
        a meta-batch (module docstring); the results are the same.
      unroll_inner_loop: True: a differentiated inner loop (second-order MAML)
        is unrolled in Python, one copy of the step per inner step in the
        graph. False: it runs in a ``tf.while_loop`` differentiated by
        TensorFlow (second derivatives included), so the graph, compile time
        and its memory do not grow with the inner steps; the meta-gradient is
        the same. Under XLA on a CPU, True also unrolls inner loops that are
        not differentiated (FOMAML, Reptile, adaptation at evaluation) of up
        to ``XLA_CPU_UNROLL_MAX_STEPS`` steps; False keeps them
        ``tf.while_loop``s.
      inner_optimizer: the inner update rule (default SGD with ``inner_lr``).
      seed: seeds randomness inside the steps (e.g. Reptile's inner mini-batches).
    """

    name = "base"

    def __init__(
        self,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        inner_lr: float,
        inner_steps: int = 1,
        eval_inner_steps: int | None = None,
        problem: str = "classification",
        adapt_variables: str = "all",
        transductive: bool = True,
        task_weighting: str = "uniform",
        jit_compile: bool = False,
        inner_optimizer: InnerSGD | InnerAdam | None = None,
        seed: int = 0,
        task_execution: str = "loop",
        unroll_inner_loop: bool = True,
    ):
        if problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}")
        if adapt_variables not in ADAPT_VARIABLES:
            raise ValueError(
                f"adapt_variables must be one of {ADAPT_VARIABLES}, got {adapt_variables!r}"
            )
        if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
            raise ValueError(
                f"inner steps must be >= 0, got {inner_steps} and {eval_inner_steps}"
            )
        if not model.built or not model.trainable_variables:
            raise ValueError(
                "model must be built and have trainable variables (call it once or give an Input)"
            )
        weighting.check_task_weighting(task_weighting)
        if task_execution not in TASK_EXECUTIONS:
            raise ValueError(
                f"task_execution must be one of {TASK_EXECUTIONS}, got {task_execution!r}"
            )
        self.model = model
        self.outer_optimizer = outer_optimizer
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.eval_inner_steps = (
            inner_steps if eval_inner_steps is None else eval_inner_steps
        )
        self.problem = problem
        self.adapt_variables = adapt_variables
        self.transductive = transductive
        self.task_weighting = task_weighting
        self.jit_compile = jit_compile
        self.task_execution = task_execution
        self.unroll_inner_loop = unroll_inner_loop
        self.inner_optimizer = inner_optimizer or InnerSGD(inner_lr)
        self.seed = seed
        self.variables = list(model.trainable_variables)
        self._adapted = self._adapted_indices(adapt_variables)
        adapted = set(self._adapted)  # and the variables that do not adapt:
        self._fixed = [i for i in range(len(self.variables)) if i not in adapted]
        # Under ``strategy.scope()`` the variables are mirrored and the
        # meta-batch is split across the replicas (``_distributed_train_step``).
        self.strategy = tf.distribute.get_strategy()
        self.distributed = tf.distribute.has_strategy()
        if self.distributed and type(self)._train_step is not MetaLearner._train_step:
            raise ValueError(
                f"{type(self).__name__} has its own meta-step and does not run under "
                "tf.distribute yet; build it outside strategy.scope()"
            )
        self.outer_optimizer.build(self.variables)
        self._task_fn = _per_task_function(self._task_result_with_update)
        self._eval_task_fn = _per_task_function(self._eval_task)
        self._train_fn = tf.function(
            _with_native_kernels(
                self._distributed_train_step if self.distributed else self._train_step
            ),
            jit_compile=jit_compile,
            reduce_retracing=False,
            autograph=False,
        )
        self._eval_fn = tf.function(
            self._eval_step,
            jit_compile=jit_compile,
            reduce_retracing=False,
            autograph=False,
        )

    # ----------------------------------------------------------------- model
    def _adapted_indices(self, adapt_variables: str) -> list[int]:
        if adapt_variables == "all":
            return list(range(len(self.variables)))
        head = [layer for layer in self.model.layers if layer.trainable_variables][-1]
        head_ids = {id(v) for v in head.trainable_variables}
        return [i for i, v in enumerate(self.variables) if id(v) in head_ids]

    def parameters(self) -> FastWeights:
        """theta as tensors (a snapshot read of the trainable variables)."""
        return [tf.identity(v.value) for v in self.variables]

    def forward(
        self,
        params: Sequence[tf.Tensor],
        x: tf.Tensor,
        num_reference: int | None = None,
    ) -> tf.Tensor:
        """Model outputs for ``x`` under weights ``params`` (no state is touched).

        ``num_reference``: normalize with statistics of the first rows only
        (see ``normalization_reference``).
        """
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        with normalization_reference(num_reference):
            outputs, _ = self.model.stateless_call(
                list(params), non_trainable, x, training=True
            )
        return outputs

    def loss(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Mean cross-entropy of logits ``[batch, n_way]`` against int labels ``[batch]``,
        or mean squared error against targets of the outputs' shape."""
        if self.problem == "classification":
            return tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    tf.cast(y, tf.int32), outputs
                )
            )
        return tf.reduce_mean(tf.square(outputs - tf.cast(y, outputs.dtype)))

    def metric(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Accuracy (classification) or mean squared error (regression), a scalar."""
        if self.problem == "classification":
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
            return tf.reduce_mean(
                tf.cast(tf.equal(predicted, tf.cast(y, tf.int32)), outputs.dtype)
            )
        return tf.reduce_mean(tf.square(outputs - tf.cast(y, outputs.dtype)))

    # ------------------------------------------------------------ inner loop
    def inner_batch(self, support_x, support_y, step, task_seed, training: bool):
        """The examples of inner step ``step``: the whole support set by default."""
        return support_x, support_y

    def _merge(
        self, params: Sequence[tf.Tensor], adapted: Sequence[tf.Tensor]
    ) -> FastWeights:
        merged = list(params)
        for index, value in zip(self._adapted, adapted):
            merged[index] = value
        return merged

    def inner_step(
        self,
        params: Sequence[tf.Tensor],
        adapted: list[tf.Tensor],
        state,
        step,
        task: tuple,
        first_order: bool = False,
    ):
        """One inner update of the adapted tensors: (adapted', state').

        ``params`` gives the tensors that do not adapt; ``task`` is
        (support_x, support_y, task_seed, training). ``first_order`` stops the
        gradient of the inner gradient (its second derivatives).
        """
        support_x, support_y, task_seed, training = task
        x, y = self.inner_batch(support_x, support_y, step, task_seed, training)
        with tf.GradientTape() as tape:
            tape.watch(adapted)
            loss = self.loss(self.forward(self._merge(params, adapted), x), y)
        grads = tape.gradient(
            loss, adapted, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        return self.inner_optimizer.update(adapted, grads, state, step)

    def inner_loop(
        self,
        params: Sequence[tf.Tensor],
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        steps: int,
        differentiable: bool,
        task_seed: tf.Tensor | None = None,
        training: bool = True,
        first_order_steps: int = 0,
    ) -> FastWeights:
        """theta'  after ``steps`` inner updates from ``params`` on the support set.

        differentiable=True lets an enclosing tape see theta' as a function of
        theta (second-order MAML), with the steps unrolled in Python or, with
        ``unroll_inner_loop=False``, in a differentiated ``tf.while_loop``; the first
        ``first_order_steps`` of them stop the gradient of their inner gradient
        (first order for those steps only). Otherwise the steps run in a
        ``tf.while_loop``: compile time does not grow with the number of steps,
        and no gradient flows back through the loop; under XLA on a CPU, where
        a while loop's convolutions run far slower, up to
        ``XLA_CPU_UNROLL_MAX_STEPS`` such steps are unrolled instead (unless
        ``unroll_inner_loop=False``).
        """
        if task_seed is None:
            task_seed = tf.constant([self.seed, 0], tf.int64)
        params = list(params)
        adapted = [params[i] for i in self._adapted]
        state = self.inner_optimizer.init(adapted)

        def one_step(step, adapted, state, first_order=False):
            return self.inner_step(
                params,
                adapted,
                state,
                step,
                (support_x, support_y, task_seed, training),
                first_order,
            )

        unroll = self.unroll_inner_loop and (
            differentiable or _unroll_for_xla_cpu(steps)
        )
        if unroll:
            for step in range(steps):
                adapted, state = one_step(
                    step, adapted, state, first_order=step < first_order_steps
                )
        else:
            # First-order steps, then second-order ones: one tf.while_loop each.
            first = min(first_order_steps, steps)
            for start, end, first_order in ((0, first, True), (first, steps, False)):
                if end > start:
                    _, adapted, state = tf.while_loop(
                        lambda step, *_, end=end: step < end,
                        lambda step, adapted, state, first_order=first_order: (
                            step + 1,
                            *one_step(step, adapted, state, first_order),
                        ),
                        (tf.constant(start), adapted, state),
                        maximum_iterations=end - start,
                    )
        return self._merge(params, adapted)

    # ------------------------------------------------------- public interface
    def adapt(
        self, support_x: tf.Tensor, support_y: tf.Tensor, inner_steps: int | None = None
    ) -> FastWeights:
        """theta' for one task: ``support_x [n_way * k_shot, ...]``, ``support_y [n_way * k_shot]``.

        Runs ``eval_inner_steps`` (or ``inner_steps``) from the current theta;
        the model's variables are not changed.
        """
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        return self.inner_loop(
            self.parameters(),
            support_x,
            support_y,
            steps,
            differentiable=False,
            training=False,
        )

    def predict(
        self,
        fast_weights: Sequence[tf.Tensor],
        query_x: tf.Tensor,
        support_x: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Outputs for ``query_x [n_query, ...]`` under theta'.

        Non-transductive learners need ``support_x``: queries are normalized with
        its statistics.
        """
        if self.transductive:
            return self.forward(fast_weights, query_x)
        if support_x is None:
            raise ValueError(
                "a non-transductive learner needs support_x in predict() for the normalization statistics"
            )
        num_support = (
            tf.shape(support_x)[0] if support_x.shape[0] is None else support_x.shape[0]
        )
        outputs = self.forward(
            fast_weights,
            tf.concat([support_x, query_x], axis=0),
            num_reference=num_support,
        )
        return outputs[num_support:]

    def task_result(
        self, support_x, support_y, query_x, query_y, task_seed
    ) -> tuple[list, tf.Tensor, tf.Tensor, list]:
        """Per-algorithm: (meta_gradient, query_loss, query_metric, fast_weights) for one task."""
        raise NotImplementedError

    def _task_result_with_update(
        self, support_x, support_y, query_x, query_y, task_seed
    ) -> TaskResult:
        params = self.parameters()
        meta_gradient, query_loss, query_metric, fast = self.task_result(
            support_x, support_y, query_x, query_y, task_seed
        )
        # Only Gradient Agreement reads the updates. Left unused, they would be
        # outputs Grappler prunes by specializing the per-task function: a
        # larger compile and ~4 MiB more memory at 5-way (BUILD_NOTES.md).
        update = (
            [p - f for p, f in zip(params, fast)]
            if self.task_weighting != "uniform"
            else []
        )
        return TaskResult(meta_gradient, update, query_loss, query_metric)

    def _run_tasks(self, episode, first_task=0, total_tasks=None) -> list:
        """The per-task function on every task of a meta-batch; task i of step s
        is seeded by (seed, s * B + i). Under ``tf.distribute`` a replica runs
        tasks ``first_task ...`` of a meta-batch of ``total_tasks``, seeded as
        on one device."""
        seeds = self._task_seeds(int(episode[0].shape[0]), first_task, total_tasks)
        return [self._task_fn(*task) for task in _per_task(*episode, seeds)]

    def _task_seeds(self, tasks: int, first_task=0, total_tasks=None) -> tf.Tensor:
        """``[tasks, 2]`` seeds of ``_run_tasks``, as one tensor."""
        total = tasks if total_tasks is None else total_tasks
        step = tf.cast(self.outer_optimizer.iterations, tf.int64)
        index = (
            step * total
            + tf.cast(first_task, tf.int64)
            + tf.range(tasks, dtype=tf.int64)
        )
        return tf.stack(
            [tf.fill([tasks], tf.constant(self.seed, tf.int64)), index], axis=1
        )

    def _map_tasks(self, fn: Callable, elems: tuple, signature) -> object:
        """``fn`` on every task of the stacked ``elems``, in one ``tf.map_fn``
        whose iterations may all run at once; results stacked ``[B, ...]``."""
        tasks = int(elems[0].shape[0])
        return tf.map_fn(
            lambda task: fn(*task),
            elems,
            fn_output_signature=signature,
            parallel_iterations=tasks,
        )

    def _run_tasks_stacked(self, episode, first_task=0, total_tasks=None) -> TaskResult:
        """``_run_tasks`` through ``tf.map_fn``: one ``TaskResult`` whose
        tensors are stacked over the tasks, seeded as ``_run_tasks``."""
        tasks = int(episode[0].shape[0])
        seeds = self._task_seeds(tasks, first_task, total_tasks)
        specs = [tf.TensorSpec(v.shape, v.dtype) for v in self.variables]
        scalar = tf.TensorSpec([], self.variables[0].dtype)
        updates = list(specs) if self.task_weighting != "uniform" else []
        signature = TaskResult(specs, updates, scalar, scalar)
        return self._map_tasks(self._task_fn, (*episode, seeds), signature)

    def _train_step(self, episode, replica=None) -> dict[str, tf.Tensor]:
        """One outer update from ``episode``; under ``tf.distribute``, ``replica``
        is (first task, meta-batch size over all replicas, all_sum)."""
        if self.task_execution == "map_fn":
            return self._train_step_stacked(episode, replica)
        first_task, total_tasks, all_sum = replica or (0, None, None)
        results = self._run_tasks(episode, first_task, total_tasks)
        weights = weighting.task_weights(
            self.task_weighting,
            [r.update for r in results],
            all_sum=all_sum,
            total_tasks=total_tasks,
            dtype=self.variables[0].dtype,
        )
        tasks = len(results)
        if self.task_weighting == "uniform":
            # Equal weights: sum the tasks' gradients, then scale once.
            meta_gradient = [
                tf.add_n(parts) * tf.cast(weights[0], parts[0].dtype)
                for parts in zip(*(r.meta_gradient for r in results))
            ]
        else:
            meta_gradient = [
                tf.add_n(
                    [
                        tf.cast(weights[i], g.dtype) * results[i].meta_gradient[k]
                        for i in range(tasks)
                    ]
                )
                for k, g in enumerate(results[0].meta_gradient)
            ]
        losses = tf.stack([r.query_loss for r in results])
        metrics = tf.stack([r.query_metric for r in results])
        return self._apply_meta_gradient(
            meta_gradient, weights, losses, metrics, replica
        )

    def _apply_meta_gradient(
        self, meta_gradient, weights, losses, metrics, replica
    ) -> dict[str, tf.Tensor]:
        """The outer update with this device's weighted meta-gradient sum."""
        if replica is not None:
            all_sum = replica[2]
            # The sum over replicas; the optimizer sums what every replica
            # applies, so each applies 1/R of it.
            meta_gradient = all_sum(meta_gradient)
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            applied = [g / replicas for g in meta_gradient]
        else:
            applied = meta_gradient
        self.outer_optimizer.apply_gradients(zip(applied, self.variables))
        return {
            "loss": tf.reduce_mean(losses),
            self.metric_name: tf.reduce_mean(metrics),
            "task_weights": weights,
            "meta_gradient_norm": tf.linalg.global_norm(meta_gradient),
        }

    def _train_step_stacked(self, episode, replica=None) -> dict[str, tf.Tensor]:
        """``_train_step`` with the tasks run by ``tf.map_fn`` (``task_execution``)."""
        first_task, total_tasks, all_sum = replica or (0, None, None)
        results = self._run_tasks_stacked(episode, first_task, total_tasks)
        # Uniform weights need only the number of tasks and the dtype.
        stacks = results.update or [tf.zeros_like(results.query_loss)]
        weights = weighting.stacked_task_weights(
            self.task_weighting, stacks, all_sum=all_sum, total_tasks=total_tasks
        )
        meta_gradient = [
            tf.tensordot(tf.cast(weights, g.dtype), g, axes=1)
            for g in results.meta_gradient
        ]
        return self._apply_meta_gradient(
            meta_gradient, weights, results.query_loss, results.query_metric, replica
        )

    def _distributed_train_step(self, episode) -> dict[str, tf.Tensor]:
        """``_train_step`` with the meta-batch split across the strategy's replicas.

        Every replica receives the whole meta-batch (on one host the same
        tensors; on several hosts each worker's identical, seeded stream) and
        adapts its contiguous share of B / R tasks; meta-gradients and the
        sums Gradient Agreement needs are all-reduced, so the update equals
        the single-device one for the same tasks.
        """
        strategy = self.strategy
        replicas = strategy.num_replicas_in_sync
        total = int(episode[0].shape[0])
        share = total // replicas

        def replica_step(*episode):
            context = tf.distribute.get_replica_context()
            index = context.replica_id_in_sync_group
            local = tuple(
                tf.gather(tf.reshape(t, [replicas, share, *t.shape[1:]]), index)
                for t in episode
            )

            def all_sum(values):
                return context.all_reduce(tf.distribute.ReduceOp.SUM, values)

            return self._train_step(local, (index * share, total, all_sum))

        outputs = strategy.run(replica_step, args=tuple(episode))
        mean = tf.distribute.ReduceOp.MEAN
        return {
            "loss": strategy.reduce(mean, outputs["loss"], axis=None),
            self.metric_name: strategy.reduce(
                mean, outputs[self.metric_name], axis=None
            ),
            "task_weights": strategy.gather(outputs["task_weights"], axis=0),
            "meta_gradient_norm": strategy.reduce(
                mean, outputs["meta_gradient_norm"], axis=None
            ),
        }

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.problem == "classification" else "mse"

    def meta_train_step(self, episode) -> dict[str, tf.Tensor]:
        """One outer update of theta from a batch of tasks.

        ``episode`` = (support_x ``[B, N*K, ...]``, support_y ``[B, N*K]``,
        query_x ``[B, N*Q, ...]``, query_y ``[B, N*Q]``). Returns scalars "loss",
        the metric ("accuracy" or "mse", post-adaptation, on the query sets),
        "meta_gradient_norm" and the per-task "task_weights" ``[B]``.
        """
        episode = tuple(episode)
        if self.distributed:
            tasks = episode[0].shape[0]
            replicas = self.strategy.num_replicas_in_sync
            if tasks % replicas:
                raise ValueError(
                    f"the meta-batch of {tasks} tasks does not split evenly over "
                    f"{replicas} replicas: use a multiple of {replicas}"
                )
        return self._train_fn(episode)

    def _eval_task(self, support_x, support_y, query_x, query_y, steps: int):
        fast = self.inner_loop(
            self.parameters(),
            support_x,
            support_y,
            steps,
            differentiable=False,
            training=False,
        )
        outputs = self.predict(fast, query_x, support_x)
        return self.loss(outputs, query_y), self.metric(outputs, query_y)

    def _eval_step(self, episode, steps: int):
        if self.task_execution == "map_fn":
            scalar = tf.TensorSpec([], self.variables[0].dtype)
            loss, metric = self._map_tasks(
                lambda *task: self._eval_task_fn(*task, steps),
                tuple(episode),
                (scalar, scalar),
            )
            return {"loss": loss, self.metric_name: metric}
        results = [self._eval_task_fn(*task, steps) for task in _per_task(*episode)]
        return {
            "loss": tf.stack([r[0] for r in results]),
            self.metric_name: tf.stack([r[1] for r in results]),
        }

    def meta_eval_step(
        self, episode, inner_steps: int | None = None
    ) -> dict[str, tf.Tensor]:
        """Per-task query loss and metric ``[B]`` after ``eval_inner_steps`` (or ``inner_steps``)."""
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        return self._eval_fn(tuple(episode), steps)

    @property
    def train_tracing_count(self) -> int:
        return self._train_fn.experimental_get_tracing_count()
