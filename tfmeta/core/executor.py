"""The meta-step: a meta-batch's tasks, their weighting and the outer update.

Knows no algorithm. A learner says what one task's result is
(``learner.task_result``) and how one task is evaluated
(``learner.eval_task``); ``MetaStep`` runs them over the tasks of a
meta-batch, weights the results (``weighting``), applies the outer update
and, under ``tf.distribute``, splits the meta-batch across the replicas.

Execution: a meta-train step is one ``tf.function`` (XLA with
``jit_compile=True``). Inside it each task runs through one per-task function
traced once and not inlined. ``task_execution`` says how it is called:
"loop" puts one call op per task in the graph (the tasks' calls run in
parallel on the inter-op pool; tracing and graph optimization grow with the
meta-batch, ~0.15 s per task); "map_fn" calls it from one ``tf.map_fn`` over
the stacked tasks, a graph of the same size for every meta-batch (flat
compile time) with the per-task results kept stacked ``[B, ...]``. Learners
use Python control flow only where it is meant to unroll and
``tf.while_loop`` where it is not, so these functions are traced without
AutoGraph (its source transformation took ~2-3 s of a 20-way trace).

Task i of meta-step s is seeded by (seed, s * B + i), on one device or split
over replicas alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import tensorflow as tf

from tfmeta.core import weighting
from tfmeta.models.kernels import native_kernels

TASK_EXECUTIONS = ("loop", "map_fn")
"""How a meta-step runs its tasks (``--task_execution``): "loop" calls the
compiled per-task function once per task (the fastest step on a CPU), "map_fn"
runs them through one ``tf.map_fn`` (compile time flat in the meta-batch)."""
# "loop" with more tasks than this takes minutes to trace and optimize
# (~0.15 s per task); "map_fn" keeps the graph the size of one task.
MAX_LOOPED_TASKS = 1000


class TaskResult(NamedTuple):
    """One task's outcome in a meta-train step (lists align with the
    learner's ``variables``)."""

    meta_gradient: list[tf.Tensor]  # this task's d(meta-loss)/d(theta)
    query_loss: tf.Tensor  # scalar, query loss after adaptation
    query_metric: tf.Tensor  # scalar, accuracy or MSE
    adapted: list[tf.Tensor] | None = None  # theta'_i, for update vectors
    extras: dict[str, tf.Tensor] | None = None  # more scalars, averaged over tasks
    # Observations of the learner's state (aligned with ``state_variables``),
    # averaged over the meta-batch and passed to ``learner.update_state``.
    statistics: list[tf.Tensor] | None = None


def check_task_execution(task_execution: str) -> None:
    if task_execution not in TASK_EXECUTIONS:
        raise ValueError(
            f"task_execution must be one of {TASK_EXECUTIONS}, got {task_execution!r}"
        )


def check_looped_tasks(task_execution: str, name: str, tasks: int) -> None:
    """Raises ValueError, naming ``name`` (e.g. "meta_batch_size"), for more
    than ``MAX_LOOPED_TASKS`` tasks in one "loop" step."""
    if task_execution == "loop" and tasks > MAX_LOOPED_TASKS:
        raise ValueError(
            f"{name}={tasks}: task_execution='loop' puts one call per task in the "
            f"graph, at most {MAX_LOOPED_TASKS} (~0.15 s of tracing each); use "
            "task_execution='map_fn' (one task's graph) where the algorithm has it, "
            "or fewer tasks"
        )


def _per_task_function(fn: Callable) -> Callable:
    # Traced once; every call in the meta-step is a call op, not an inlined copy.
    return tf.function(
        fn,
        experimental_attributes={"_noinline": True},
        reduce_retracing=False,
        autograph=False,
    )


def _step_function(fn: Callable, jit_compile: bool) -> Callable:
    return tf.function(
        fn, jit_compile=jit_compile, reduce_retracing=False, autograph=False
    )


def per_task(*tensors: tf.Tensor) -> list[tuple[tf.Tensor, ...]]:
    """Task i's slice of each ``[B, ...]`` tensor, for i < B: one Unpack per
    tensor, not a strided slice (and its constants) per task and tensor."""
    tasks = int(tensors[0].shape[0])
    return list(zip(*(tf.unstack(t, num=tasks) for t in tensors)))


def _with_native_kernels(step: Callable) -> Callable:
    """``step`` traced within ``native_kernels``: a meta-train step (never
    exported) may use the native kernels."""

    @functools.wraps(step)
    def traced(*args, **kwargs):
        with native_kernels():
            return step(*args, **kwargs)

    return traced


class _Record(NamedTuple):
    """What the per-task function returns: the update vector theta - theta'_i
    only when the weighting reads it (left unused, it would be an output
    Grappler prunes by specializing the function: a larger compile and ~4 MiB
    more memory at 5-way)."""

    meta_gradient: list
    update: list
    query_loss: tf.Tensor
    query_metric: tf.Tensor
    extras: dict
    statistics: list


class MetaStep:
    """Compiled meta-train and meta-eval steps of one learner.

    Args:
      learner: has ``variables``, ``outer_optimizer``, ``metric_name``,
        ``extra_metrics`` (names of its ``TaskResult.extras``),
        ``parameters()``, ``task_result(support_x, support_y, query_x,
        query_y, task_seed)``, ``eval_task(..., steps)``,
        ``outer_gradient(meta_gradient, outputs)``, ``state_variables`` and
        ``update_state(statistics)``.
      task_weighting: ``weighting.TASK_WEIGHTINGS``.
      task_execution: "loop" or "map_fn" (module docstring).
      jit_compile: XLA for both steps.
      seed: with the step and the task index, seeds each task.
    """

    def __init__(
        self,
        learner,
        *,
        task_weighting: str = "uniform",
        task_execution: str = "loop",
        jit_compile: bool = False,
        seed: int = 0,
    ):
        weighting.check_task_weighting(task_weighting)
        check_task_execution(task_execution)
        self.learner = learner
        self.task_weighting = task_weighting
        self.task_execution = task_execution
        self.jit_compile = jit_compile
        self.seed = seed
        # Under ``strategy.scope()`` the variables are mirrored and the
        # meta-batch is split across the replicas.
        self.strategy = tf.distribute.get_strategy()
        self.distributed = tf.distribute.has_strategy()
        self._task_fn = _per_task_function(self._task_record)
        self._eval_task_fn = _per_task_function(learner.eval_task)
        train = self._distributed_train_step if self.distributed else self._train_step
        self._train_fn = _step_function(_with_native_kernels(train), jit_compile)
        self._eval_fn = _step_function(self._eval_step, jit_compile)

    # ---------------------------------------------------------- per task
    def task(self, support_x, support_y, query_x, query_y, task_seed) -> _Record:
        """One task's result through the compiled per-task function (the
        meta-gradient, the update vector where the weighting reads it, the
        query loss and metric, the extras)."""
        return self._task_fn(support_x, support_y, query_x, query_y, task_seed)

    def _task_record(self, support_x, support_y, query_x, query_y, task_seed):
        learner = self.learner
        params = learner.parameters()
        result = learner.task_result(support_x, support_y, query_x, query_y, task_seed)
        # A gradient through a gather (e.g. per-step parameters) comes as
        # IndexedSlices: dense, like every other task's.
        meta_gradient = [
            tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
            for g in result.meta_gradient
        ]
        update = (
            [p - f for p, f in zip(params, result.adapted)]
            if self.task_weighting != "uniform"
            else []
        )
        return _Record(
            meta_gradient,
            update,
            result.query_loss,
            result.query_metric,
            dict(result.extras or {}),
            list(result.statistics or []),
        )

    def _task_seeds(self, tasks: int, first_task=0, total_tasks=None) -> tf.Tensor:
        """``[tasks, 2]`` seeds of tasks ``first_task ...`` of a meta-batch of
        ``total_tasks``, as one tensor."""
        total = tasks if total_tasks is None else total_tasks
        step = tf.cast(self.learner.outer_optimizer.iterations, tf.int64)
        index = (
            step * total
            + tf.cast(first_task, tf.int64)
            + tf.range(tasks, dtype=tf.int64)
        )
        return tf.stack(
            [tf.fill([tasks], tf.constant(self.seed, tf.int64)), index], axis=1
        )

    def _map_tasks(self, fn: Callable, elems: tuple, signature) -> Any:
        """``fn`` on every task of the stacked ``elems``, in one ``tf.map_fn``
        whose iterations may all run at once; results stacked ``[B, ...]``."""
        tasks = int(elems[0].shape[0])
        return tf.map_fn(
            lambda task: fn(*task),
            elems,
            fn_output_signature=signature,
            parallel_iterations=tasks,
        )

    # --------------------------------------------------------- train step
    def _train_step(self, episode, replica=None) -> dict[str, tf.Tensor]:
        """One outer update from ``episode``; under ``tf.distribute``, ``replica``
        is (first task, meta-batch size over all replicas, all_sum)."""
        first_task, total_tasks, all_sum = replica or (0, None, None)
        tasks = int(episode[0].shape[0])
        seeds = self._task_seeds(tasks, first_task, total_tasks)
        dtype = self.learner.variables[0].dtype
        if self.task_execution == "map_fn":
            specs = [tf.TensorSpec(v.shape, v.dtype) for v in self.learner.variables]
            scalar = tf.TensorSpec([], dtype)
            updates = list(specs) if self.task_weighting != "uniform" else []
            extras = {name: scalar for name in self.learner.extra_metrics}
            statistics = [
                tf.TensorSpec(v.shape, v.dtype) for v in self.learner.state_variables
            ]
            signature = _Record(specs, updates, scalar, scalar, extras, statistics)
            stacked = self._map_tasks(self._task_fn, (*episode, seeds), signature)
            # Uniform weights need only the number of tasks and the dtype.
            stacks = stacked.update or [tf.zeros_like(stacked.query_loss)]
            weights = weighting.stacked_task_weights(
                self.task_weighting, stacks, all_sum=all_sum, total_tasks=total_tasks
            )
            meta_gradient = [
                tf.tensordot(tf.cast(weights, g.dtype), g, axes=1)
                for g in stacked.meta_gradient
            ]
            losses, metrics, extras = (
                stacked.query_loss,
                stacked.query_metric,
                stacked.extras,
            )
            statistics = [tf.reduce_sum(s, axis=0) for s in stacked.statistics]
        else:
            results = [self._task_fn(*task) for task in per_task(*episode, seeds)]
            weights = weighting.task_weights(
                self.task_weighting,
                [r.update for r in results],
                all_sum=all_sum,
                total_tasks=total_tasks,
                dtype=dtype,
            )
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
                            tf.cast(weights[i], g.dtype) * r.meta_gradient[k]
                            for i, r in enumerate(results)
                        ]
                    )
                    for k, g in enumerate(results[0].meta_gradient)
                ]
            losses = tf.stack([r.query_loss for r in results])
            metrics = tf.stack([r.query_metric for r in results])
            extras = {
                name: tf.stack([r.extras[name] for r in results])
                for name in self.learner.extra_metrics
            }
            statistics = [
                tf.add_n(list(parts)) for parts in zip(*(r.statistics for r in results))
            ]
        outputs = self._apply(meta_gradient, weights, losses, metrics, extras, replica)
        self._update_state(statistics, tasks, replica)
        return outputs

    def _update_state(self, statistics, tasks, replica) -> None:
        """The learner's state from the mean over the meta-batch (all
        replicas) of its tasks' observations (``statistics``: their sum on
        this device)."""
        if not statistics:
            return
        if replica is not None:
            statistics = replica[2](statistics)
            tasks = replica[1]
        self.learner.update_state([s / tf.cast(tasks, s.dtype) for s in statistics])

    def _apply(
        self, meta_gradient, weights, losses, metrics, extras, replica
    ) -> dict[str, tf.Tensor]:
        """The outer update with this device's weighted meta-gradient sum."""
        learner = self.learner
        outputs = {
            "loss": tf.reduce_mean(losses),
            learner.metric_name: tf.reduce_mean(metrics),
            **{name: tf.reduce_mean(value) for name, value in extras.items()},
            "task_weights": weights,
        }
        if replica is not None:
            meta_gradient = replica[2](meta_gradient)  # the sum over replicas
        meta_gradient, applied = learner.outer_gradient(meta_gradient, outputs)
        if replica is not None:
            # The optimizer sums what every replica applies: each applies 1/R.
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            applied = [g / replicas for g in applied]
        learner.outer_optimizer.apply_gradients(zip(applied, learner.variables))
        outputs["meta_gradient_norm"] = tf.linalg.global_norm(meta_gradient)
        return outputs

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
            name: strategy.gather(value, axis=0)
            if name == "task_weights"
            else strategy.reduce(mean, value, axis=None)
            for name, value in outputs.items()
        }

    def train(self, episode) -> dict[str, tf.Tensor]:
        """One outer update from ``episode`` (see ``Learner.meta_train_step``)."""
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

    # ---------------------------------------------------------- eval step
    def _eval_step(self, episode, steps: int):
        name = self.learner.metric_name
        if self.task_execution == "map_fn":
            dtype = self.learner.variables[0].dtype
            scalar = tf.TensorSpec([], dtype)
            outputs = tf.TensorSpec([episode[2].shape[1], None], dtype)
            loss, metric, outputs = self._map_tasks(
                lambda *task: self._eval_task_fn(*task, steps),
                tuple(episode),
                (scalar, scalar, outputs),
            )
            return {"loss": loss, name: metric, "outputs": outputs}
        results = [self._eval_task_fn(*task, steps) for task in per_task(*episode)]
        return {
            "loss": tf.stack([r[0] for r in results]),
            name: tf.stack([r[1] for r in results]),
            "outputs": tf.stack([r[2] for r in results]),
        }

    def evaluate(self, episode, steps: int) -> dict[str, tf.Tensor]:
        """Per-task query loss and metric ``[B]`` and the query outputs they
        come from (``[B, n_query, ...]``) after ``steps`` inner steps."""
        return self._eval_fn(tuple(episode), steps)

    @property
    def train_tracing_count(self) -> int:
        return self._train_fn.experimental_get_tracing_count()
