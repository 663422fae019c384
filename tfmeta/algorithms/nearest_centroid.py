"""Nearest-centroid classification on a fixed embedding: no meta-training.

The prototype rule of Prototypical Networks (``protonet``: c_k the mean
support embedding of class k, a query to the class of the nearest c_k) on an
embedding f_phi that is not meta-learned: a backbone pretrained by ordinary
classification on the meta-train classes, as the "a good embedding is all
you need" baselines (Tian et al. 2020; Meta-Baseline's Classifier-Baseline,
Chen et al. 2021) evaluate it. The default ``distance`` is theirs: cosine
similarity to L2-normalized prototypes, scaled by a fixed ``temperature``;
"euclidean" gives Prototypical Networks' rule.

A meta-train step leaves theta unchanged (its meta-gradient is zero and it
computes none; the step still reports the batch's query loss and accuracy),
so a run of any length evaluates the embedding it starts from: the one a
config loads (``pretrained_backbone``, read by the binaries) or, without one,
the model's initialization.

  python -m experiments.train --algorithm=nearest_centroid --dataset=omniglot --workdir=/tmp/nc
"""

from __future__ import annotations

import tensorflow as tf

from tfmeta.algorithms import protonet
from tfmeta.core.algorithm import Algorithm
from tfmeta.core.executor import TaskResult


class NearestCentroid(protonet.PrototypicalNetwork):
    """The prototype rule with theta fixed; arguments of ``PrototypicalNetwork``
    (``distance`` defaults to "cosine")."""

    name = "nearest_centroid"

    def __init__(self, model, outer_optimizer, *, distance: str = "cosine", **kwargs):
        super().__init__(model, outer_optimizer, distance=distance, **kwargs)

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        """The query loss and accuracy of a ``train_n_way``-way task; a zero
        meta-gradient (theta is not trained)."""
        del task_seed
        params = self.parameters()
        support, query = self.embed_task(params, support_x, query_x)
        prototypes = protonet.class_prototypes(support, support_y, self.train_n_way)
        logits = self.logits(query, prototypes)
        zeros = [tf.zeros_like(p) for p in params]
        return TaskResult(
            zeros, self.loss(logits, query_y), self.metric(logits, query_y), None
        )


ALGORITHM = Algorithm(
    name="nearest_centroid",
    learner=NearestCentroid,
    summary="nearest-centroid rule on a fixed (pretrained) embedding, no meta-training",
)
