"""Export options: transductive normalization when asked for, and what `predict` then takes."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import tiny_conv
from tfmeta.algorithms import MAML
from tfmeta.export import export_learner


def _episode(seed: int):
    rng = np.random.default_rng(seed)
    support_x = rng.normal(size=(6, 8, 8, 1)).astype(np.float32)
    support_y = np.repeat(np.arange(3), 2).astype(np.int32)
    return support_x, support_y, rng.normal(size=(4, 8, 8, 1)).astype(np.float32)


def test_transductive_export_normalizes_queries_with_their_own_statistics(tmp_path):
    learner = MAML(
        tiny_conv(), keras.optimizers.Adam(1e-3), inner_lr=0.4, eval_inner_steps=2
    )
    exported = export_learner(learner, str(tmp_path / "m"), transductive=True)
    assert exported.metadata["transductive"] is True
    loaded = tf.saved_model.load(exported.path)
    support_x, support_y, query_x = (tf.constant(a) for a in _episode(0))
    served = loaded.signatures["serving_default"](
        support_x=support_x, support_y=support_y, query_x=query_x
    )["logits"].numpy()
    fast = learner.adapt(support_x, support_y)
    np.testing.assert_allclose(
        served, learner.forward(fast, query_x).numpy(), rtol=0, atol=1e-5
    )
    first_alone = loaded.signatures["serving_default"](
        support_x=support_x, support_y=support_y, query_x=query_x[:1]
    )["logits"].numpy()
    assert np.abs(first_alone[0] - served[0]).max() > 1e-3  # depends on the others
    # Without adaptation the queries are normalized with their own statistics too.
    predict = loaded.signatures["predict"]
    assert set(predict.structured_input_signature[1]) == {"query_x"}
    np.testing.assert_allclose(
        predict(query_x=query_x)["logits"].numpy(),
        learner.forward(learner.parameters(), query_x).numpy(),
        rtol=0,
        atol=1e-5,
    )
    # The trained learner itself is not changed by exporting.
    assert learner.transductive is False
    plain = export_learner(learner, str(tmp_path / "m"))
    assert plain.version == 2 and learner.transductive is False
    predict = tf.saved_model.load(plain.path).signatures["predict"]
    assert set(predict.structured_input_signature[1]) == {"support_x", "query_x"}
