"""How the per-task meta-gradients of a meta-batch are combined.

"uniform": the plain mean, w_i = 1/T.

"gradient_agreement" (Eshratifar, Eigen and Pedram, "Gradient Agreement as an
Optimization Objective for Meta-Learning", 2018, eq. 4): with g_i the update
vector of task i, theta - theta'_i flattened over all trainable variables,

    w_i = sum_j (g_i . g_j) / sum_k | sum_j (g_k . g_j) |,

so a task whose update agrees with the batch's gets more weight and one that
pulls against the rest gets less, or negative, weight. The outer update uses
sum_i w_i * (task i's meta-gradient) in place of the mean. The weights are
constants in the outer update (no gradient flows through them).

Which vector is g_i: the paper defines it as the inner loop's parameter
change, theta - theta'_i, for every algorithm, and so do we:
- MAML / FOMAML: g_i = theta - theta'_i (the support-set steps), and the
  weights multiply the task's query-loss meta-gradient. The update measures
  where the task's own data pull theta, independent of how its meta-gradient
  is formed, so first and second order get the same weights.
- Reptile: g_i = theta - theta'_i is also the task's meta-gradient, so the
  weighting reweights the very vectors it compares.

Degenerate batches: when sum_k |sum_j g_k . g_j| is zero or negligible
(every g_i zero, i.e. no inner movement, or two exactly opposed tasks with
T = 2, where the formula is 0/0), the weights fall back to uniform 1/T, i.e.
the plain mean: never NaN. "Negligible" is below ``RELATIVE_TOLERANCE`` times
sum_k g_k . g_k, so round-off in an exact cancellation does not pick weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

TASK_WEIGHTINGS = ("uniform", "gradient_agreement")
RELATIVE_TOLERANCE = 1e-6


def check_task_weighting(name: str) -> None:
    if name not in TASK_WEIGHTINGS:
        raise ValueError(
            f"task_weighting must be one of {TASK_WEIGHTINGS}, got {name!r}"
        )


def gram_matrix(updates: Sequence[Sequence[tf.Tensor]]) -> tf.Tensor:
    """G_ij = g_i . g_j ``[T, T]`` for T tasks; ``updates[i]`` is a list of tensors
    (one per variable) that together make g_i."""
    return stacked_gram_matrix([tf.stack(list(parts)) for parts in zip(*updates)])


def stacked_gram_matrix(stacks: Sequence[tf.Tensor]) -> tf.Tensor:
    """``gram_matrix`` from the updates stacked per variable ``[T, ...]``."""
    tasks = int(stacks[0].shape[0])
    flat = [tf.reshape(s, [tasks, -1]) for s in stacks]
    return tf.add_n([tf.matmul(f, f, transpose_b=True) for f in flat])


def gradient_agreement_weights(gram: tf.Tensor) -> tf.Tensor:
    """w_i = sum_j G_ij / sum_k |sum_j G_kj| from the Gram matrix ``[T, T]``;
    uniform 1/T where the denominator is negligible (see module docstring)."""
    agreement = tf.reduce_sum(gram, axis=1)  # sum_j g_i . g_j
    denominator = tf.reduce_sum(tf.abs(agreement))
    scale = tf.linalg.trace(gram)
    tasks = tf.cast(tf.shape(gram)[0], gram.dtype)
    degenerate = denominator <= RELATIVE_TOLERANCE * scale
    safe = tf.where(degenerate, tf.ones_like(denominator), denominator)
    weights = tf.where(degenerate, tf.ones_like(agreement) / tasks, agreement / safe)
    return tf.stop_gradient(weights)


def task_weights(
    name: str,
    updates: Sequence[Sequence[tf.Tensor]],
    all_sum: Callable[[Any], Any] | None = None,
    total_tasks: int | None = None,
    dtype: tf.DType | None = None,
) -> tf.Tensor:
    """Weights ``[T]`` (``dtype``, else the updates') for T tasks; ``updates[i]``
    is task i's update vector theta - theta'_i as a list of tensors (may be
    empty for uniform weights, which need only T). See
    ``stacked_task_weights`` for ``all_sum`` and ``total_tasks``."""
    check_task_weighting(name)
    if name == "uniform":  # needs only T and the dtype: nothing to stack
        dtype = dtype or updates[0][0].dtype
        stacks = [tf.zeros([len(updates)], dtype)]
    else:
        stacks = [tf.stack(list(parts)) for parts in zip(*updates)]
    return stacked_task_weights(name, stacks, all_sum, total_tasks)


def stacked_task_weights(
    name: str,
    stacks: Sequence[tf.Tensor],
    all_sum: Callable[[Any], Any] | None = None,
    total_tasks: int | None = None,
) -> tf.Tensor:
    """Weights ``[T]`` for T tasks from the update vectors stacked per variable:
    ``stacks[v]`` is ``[T, *shape of variable v]``, row i task i's part of
    theta - theta'_i (T static).

    Across replicas (``tf.distribute``), the stacks hold this replica's
    tasks, ``all_sum`` sums a nest of tensors over the replicas and
    ``total_tasks`` is the meta-batch size over all of them: the weights are
    those of the whole meta-batch, for this replica's tasks. Gradient Agreement
    then needs only sums, sum_j g_i . g_j = g_i . (sum_j g_j), so each replica
    all-reduces one update-sized sum and two scalars, not the Gram matrix.
    """
    check_task_weighting(name)
    tasks = int(stacks[0].shape[0])
    dtype = stacks[0].dtype
    if all_sum is None:
        if name == "gradient_agreement":
            return gradient_agreement_weights(stacked_gram_matrix(stacks))
        return tf.fill([tasks], tf.constant(1.0 / tasks, dtype))
    total = tf.constant(float(total_tasks), dtype)
    if name == "uniform":
        return tf.fill([tasks], 1.0 / total)
    flat = [tf.reshape(s, [tasks, -1]) for s in stacks]
    batch_sum = all_sum([tf.reduce_sum(f, axis=0) for f in flat])
    # sum_j g_i . g_j for this replica's tasks i
    agreement = tf.add_n([tf.linalg.matvec(f, g) for f, g in zip(flat, batch_sum)])
    squares = tf.add_n([tf.reduce_sum(f * f, axis=1) for f in flat])
    denominator, scale = all_sum(
        [tf.reduce_sum(tf.abs(agreement)), tf.reduce_sum(squares)]
    )
    degenerate = denominator <= RELATIVE_TOLERANCE * scale
    safe = tf.where(degenerate, tf.ones_like(denominator), denominator)
    weights = tf.where(degenerate, tf.ones_like(agreement) / total, agreement / safe)
    return tf.stop_gradient(weights)
