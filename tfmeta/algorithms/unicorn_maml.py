"""UNICORN-MAML (Ye and Chao, "How to Train Your MAML to Excel in Few-Shot
Classification", ICLR 2022): MAML whose N-way linear head starts every task
with the same vector in every class's column, so the start does not depend
on the order in which a task's N classes are given (a meta-learned N-way
head otherwise answers differently under the N! permutations of the labels).

Which vector does not matter: the softmax cross-entropy is unchanged when
one vector c is added to every column of the head (every logit moves by
z . c), so is its gradient with respect to the columns and to the features
z (sum_k (p_k - y_k) c = 0), and so is every inner step and the query loss
after them. A learned shared vector w (the paper's) therefore gets exactly
zero meta-gradient (checked against finite differences in the tests), and
the start is taken as W = 0, b = 0, Kao et al.'s zeroing trick ("MAML is a
Noisy Contrastive Learner in Classification", ICLR 2022), which gives the
same inner loop and query loss as any shared w. MAML's inner steps (second
order, or first order) adapt theta'_i from there; ``adapt``/``predict`` and
the export use theta'_i; theta's own head variables are never used (zero
meta-gradient). ``SharedHeadStart`` is this start for any fast-weight
learner (``unicorn_reptile``).

  python -m experiments.train --algorithm=unicorn_maml --dataset=omniglot \
      --workdir=/tmp/tfmeta_runs/unicorn_maml_omniglot
"""

from __future__ import annotations

import tensorflow as tf

from tfmeta.algorithms import maml
from tfmeta.algorithms.proto_maml import head_indices
from tfmeta.core.algorithm import Algorithm
from tfmeta.core.inner_loop import FastWeights


class SharedHeadStart:
    """A fast-weight learner's per-task start with the head at zero: one
    vector, the same for every class. Mixed in before the learner's class;
    classification only."""

    initial_head = "zero, the same for every class (a shared start, as UNICORN-MAML)"

    def __init__(self, model, outer_optimizer, **kwargs):
        SharedHeadStart.check_arguments(
            problem=kwargs.get("problem", "classification"), learner_name=self.name
        )
        super().__init__(model, outer_optimizer, **kwargs)
        self.kernel_index, self.bias_index = head_indices(model)

    @staticmethod
    def check_arguments(
        *, problem: str, learner_name: str = "a shared head start", **_
    ) -> None:
        """(``tfmeta.core.Learner.check_arguments``.)"""
        if problem != "classification":
            raise ValueError(
                f"{learner_name} classifies (one head vector starts every class), got "
                f"problem={problem!r}"
            )

    def initial_weights(
        self, params: FastWeights, support_x: tf.Tensor, support_y: tf.Tensor
    ) -> FastWeights:
        """theta with the head's kernel and bias at zero: one vector, the same
        for every class (any shared vector gives the same inner loop)."""
        start = list(params)
        for index in (self.kernel_index, self.bias_index):
            start[index] = tf.zeros_like(params[index])
        return start


class UnicornMAML(SharedHeadStart, maml.TaskStartMAML):
    """UNICORN-MAML: MAML from a head start shared by every class;
    ``first_order=True`` gives its first-order variant. Other arguments:
    ``MAML``; classification only."""

    name = "unicorn_maml"


ALGORITHM = Algorithm(
    name="unicorn_maml",
    learner=UnicornMAML,
    summary="UNICORN-MAML: MAML from one head start shared by every class (Ye and Chao 2022)",
)
