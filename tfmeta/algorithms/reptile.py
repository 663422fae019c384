"""Reptile (Nichol, Achiam and Schulman, "On First-Order Meta-Learning
Algorithms", 2018).

For each task, phi_tilde_i is the result of k steps of an inner optimizer
(Adam with beta1 = 0 in the paper) on mini-batches of the task's training
examples, starting from phi. The outer update is
  phi <- phi + epsilon * mean_i (phi_tilde_i - phi),
i.e. plain gradient descent with learning rate epsilon on the pseudo-gradient
phi - phi_tilde_i; the paper anneals epsilon linearly to 0 (the
``annealed_sgd`` outer optimizer). Where the inner loop starts elsewhere
than phi (a per-task start s(phi), ``initial_weights``), the pseudo-gradient
is the move s(phi) - phi_tilde_i carried back to phi by the chain rule
through the start (``unicorn_reptile``: zero for the head, which the start
replaces).

  python -m experiments.train --algorithm=reptile --dataset=omniglot --workdir=/tmp/reptile
"""

from __future__ import annotations

import tensorflow as tf

from tfmeta.checks import check_optional_count
from tfmeta.core.algorithm import Algorithm
from tfmeta.core.executor import TaskResult
from tfmeta.core.fast_weight_learner import FastWeightLearner


class Reptile(FastWeightLearner):
    """Reptile. ``inner_batch_size`` / ``eval_inner_batch_size``: examples per
    inner step in meta-training / evaluation, cycled through a random
    permutation of the task's support set (None: the whole set). Other
    arguments: ``FastWeightLearner``."""

    name = "reptile"

    def __init__(
        self,
        *args,
        inner_batch_size: int | None = None,
        eval_inner_batch_size: int | None = None,
        **kwargs,
    ):
        Reptile.check_arguments(
            inner_batch_size=inner_batch_size,
            eval_inner_batch_size=eval_inner_batch_size,
        )
        super().__init__(*args, **kwargs)
        self.inner_batch_size = inner_batch_size
        self.eval_inner_batch_size = eval_inner_batch_size

    @staticmethod
    def check_arguments(*, inner_batch_size, eval_inner_batch_size, **_) -> None:
        """(``tfmeta.core.Learner.check_arguments``.)"""
        check_optional_count("inner_batch_size", inner_batch_size, minimum=1)
        check_optional_count("eval_inner_batch_size", eval_inner_batch_size, minimum=1)

    def adaptation_seed(self, support_x):
        """Each evaluated or served task its own mini-batch order, seeded by
        its support set's content (the same request, the same answer)."""
        return self.content_seed(support_x)

    def inner_batch(self, support_x, support_y, step, task_seed, training):
        """Examples of inner step ``step``: one stateless permutation of the
        support set seeded by ``task_seed``, cycled ``batch_size`` at a time;
        the whole set when it is not larger than ``batch_size``. The support
        size may be known only at run time (e.g. in a served model)."""
        batch_size = self.inner_batch_size if training else self.eval_inner_batch_size
        if batch_size is None:
            return support_x, support_y
        static_size = support_x.shape[0]
        if static_size is not None and batch_size >= static_size:
            return support_x, support_y
        size = tf.shape(support_x)[0]

        def mini_batch():
            order = tf.random.experimental.stateless_shuffle(
                tf.range(size), seed=task_seed
            )
            positions = (
                tf.cast(step, tf.int32) * batch_size + tf.range(batch_size)
            ) % size
            indices = tf.gather(order, positions)
            return tf.gather(support_x, indices), tf.gather(support_y, indices)

        if static_size is not None:
            return mini_batch()
        return tf.cond(batch_size >= size, lambda: (support_x, support_y), mini_batch)

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        params = self.parameters()
        start, to_theta = self.task_start(params, support_x, support_y)
        fast = self.inner_loop(
            start, support_x, support_y, self.inner_steps, False, task_seed
        )
        outputs = self.predict(fast, query_x, support_x, training=True)
        return TaskResult(
            to_theta([s - f for s, f in zip(start, fast)]),
            self.loss(outputs, query_y),
            self.metric(outputs, query_y),
            self.update_end(params, start, fast),
        )

    def describe(self) -> dict:
        return {
            **super().describe(),
            "eval_inner_batch_size": int(self.eval_inner_batch_size or 0),
        }


ALGORITHM = Algorithm(
    name="reptile", learner=Reptile, summary="Reptile (Nichol et al. 2018)"
)
