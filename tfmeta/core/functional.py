"""A Keras model as a pure function of its weights.

Inner loops never assign variables: fast weights are tensors passed through
``keras.Model.stateless_call``. ``forward`` is that call; ``predict`` adds how
a query batch is normalized (transductively, by its own statistics, or by the
support set's, so one query's answer does not depend on the other queries).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tfmeta.models.batch_norm import (
    collect_statistics,
    fixed_statistics,
    has_batch_norm,
    normalization_reference,
)


def forward(
    model: keras.Model,
    params: Sequence[tf.Tensor],
    x: tf.Tensor,
    num_reference: int | tf.Tensor | None = None,
) -> tf.Tensor:
    """``model``'s outputs for ``x`` under weights ``params`` (aligned with
    ``model.trainable_variables``; meta-parameters a learner owns besides
    them come after and are not the model's); no state is touched.

    ``num_reference``: normalization layers use the statistics of the first
    this many rows only (``tfmeta.models.batch_norm.normalization_reference``).
    """
    non_trainable = [v.value for v in model.non_trainable_variables]
    with normalization_reference(num_reference):
        trainable = list(params)[: len(model.trainable_variables)]
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=True)
    return outputs


def support_and_query(
    model: keras.Model,
    params: Sequence[tf.Tensor],
    support_x: tf.Tensor,
    query_x: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Outputs for ``support_x`` and for ``query_x`` under ``params``, the
    queries normalized with the support set's statistics: the support set
    runs first and every normalization layer records its moments
    (``collect_statistics``), then the queries run with those moments
    (``fixed_statistics``), through which their gradient reaches the support
    rows. The same values as one batch whose statistics come from its
    support rows (``normalization_reference``), without the batch's concat
    and the slices of every layer."""
    with collect_statistics() as moments:
        support = forward(model, params, support_x)
    with fixed_statistics(moments):
        query = forward(model, params, query_x)
    return support, query


def predict(
    model: keras.Model,
    params: Sequence[tf.Tensor],
    query_x: tf.Tensor,
    support_x: tf.Tensor | None,
    transductive: bool,
) -> tf.Tensor:
    """Outputs for ``query_x [n_query, ...]`` under ``params``.

    ``transductive``: the queries are normalized with their own batch
    statistics. Otherwise with ``support_x``'s (``support_and_query``; a
    model without batch norm needs no ``support_x``).
    """
    if transductive or not has_batch_norm(model):
        return forward(model, params, query_x)
    if support_x is None:
        raise ValueError(
            "a non-transductive learner needs support_x in predict() for the "
            "normalization statistics"
        )
    return support_and_query(model, params, support_x, query_x)[1]
