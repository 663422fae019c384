"""Serving functions of LEO: the same requests as the other classifiers, over embeddings.

A request carries support embeddings ``[S, d]`` with labels in [0, N) and
query embeddings ``[Q, d]``. ``adapt_and_predict`` runs LEO's meta-test
adaptation in the graph (encode the support set, ``eval_inner_steps`` latent
steps with the meta-learned alpha, decode the class weights w, then
``finetune_steps`` steps on w with the meta-learned eta; deterministic, no
dropout) and classifies the queries with softmax(w . x). The support set may
hold any number of examples per class, at least one of each: the latent code
of a class averages over its own examples, and the inner loss sums each
class's mean cross-entropy.

LEO's initialization depends on the support set (the encoder and relation
network give the class codes), so ``predict`` takes a support set too: it
classifies the queries with the weights decoded from those codes, before any
latent step or fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfmeta.export.signatures import (
    ImagePreprocessing,
    _after,
    batch_spec,
    check_examples,
    check_labels,
    check_not_empty,
    check_same_length,
    classification_outputs,
)


def leo_signatures(
    learner: Any, preprocessing: ImagePreprocessing | None
) -> dict[str, Callable]:
    """``adapt_and_predict`` and ``predict`` of a LEO learner (see the module doc).

    Both take ``support_x`` float32 ``[S, d]``, ``support_y`` int32 ``[S]``,
    ``query_x`` ``[Q, d]`` and return ``logits``, ``probabilities`` ``[Q, N]``
    and ``classes`` int32 ``[Q]``.
    """
    if preprocessing is not None:
        raise ValueError(
            "LEO runs on embedding vectors: it has no image signature (embed the images "
            "with the backbone that wrote the training embeddings)"
        )
    dim = int(learner.model.embedding_dim)
    n_way = int(learner.n_way)
    spec = [
        batch_spec("support_x", 2),
        tf.TensorSpec([None], tf.int32, name="support_y"),
        batch_spec("query_x", 2),
    ]

    def checked(support_x, support_y, query_x):
        checks = [
            check_same_length(("support_x", "support_y"), support_x, support_y),
            check_not_empty("query_x", query_x, "query"),
            *check_labels(support_y, n_way),
        ]
        support_x, support_y, query_x = _after(checks, support_x, support_y, query_x)
        support_x = check_examples("support_x", support_x, (dim,))
        query_x = check_examples("query_x", query_x, (dim,))
        return support_x, support_y, query_x

    def classify(support_x, support_y, query_x, latent_steps, finetune_steps):
        support_x, support_y, query_x = checked(support_x, support_y, query_x)
        adapted = learner.leo_adapt(
            learner.model.split_parameters(learner.parameters()),
            support_x,
            support_y,
            latent_steps,
            finetune_steps,
            training=False,
        )
        return classification_outputs(learner.predict(adapted.weights, query_x))

    @tf.function(input_signature=spec)
    def adapt_and_predict(support_x, support_y, query_x):
        return classify(
            support_x,
            support_y,
            query_x,
            int(learner.eval_inner_steps),
            int(learner.finetune_steps),
        )

    @tf.function(input_signature=spec)
    def predict(support_x, support_y, query_x):
        return classify(support_x, support_y, query_x, 0, 0)

    return {"adapt_and_predict": adapt_and_predict, "predict": predict}


def describe_leo(learner: Any) -> dict[str, Any]:
    """The metadata of a LEO export: what its adaptation runs."""
    params = learner.model.split_parameters(learner.parameters())
    alpha = params.inner_lr.numpy()
    eta = params.finetune_lr.numpy()
    return {
        "input_shape": [int(learner.model.embedding_dim)],
        "n_way": int(learner.n_way),
        "inner_steps": int(learner.eval_inner_steps),
        "finetune_steps": int(learner.finetune_steps),
        "num_latents": int(learner.model.num_latents),
        # alpha [h] and eta [d] are meta-learned vectors: their means, for reading.
        "inner_lr": float(alpha.mean()),
        "finetune_lr": float(eta.mean()),
        "inner_optimizer": "sgd (latent, per-dimension alpha; then on w, per-dimension eta)",
        "adapt_variables": "latent codes z, then classifier weights w",
    }
