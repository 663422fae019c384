"""Another learner type adds its own signatures; it never silently gets the defaults."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_mlp
from tfmeta.algorithms import MAML
from tfmeta.export import export_learner, register_signatures, saved_model


class ClosedForm(MAML):
    """A learner with its own adaptation: the fast weights are theta shifted by mean(support_y)."""

    name = "closed_form"

    def adapt(self, support_x, support_y, inner_steps=None):
        shift = tf.reduce_mean(support_y)
        return [p + shift if p.shape.rank == 1 else p for p in self.parameters()]


def closed_form_signatures(learner, image_preprocessing):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="support_x"),
            tf.TensorSpec([None, 1], tf.float32, name="support_y"),
            tf.TensorSpec([None, 1], tf.float32, name="query_x"),
        ]
    )
    def adapt_and_predict(support_x, support_y, query_x):
        return {"y": learner.forward(learner.adapt(support_x, support_y), query_x)}

    return {"adapt_and_predict": adapt_and_predict}


def _learner(cls=ClosedForm):
    return cls(
        tiny_mlp(), keras.optimizers.SGD(0.1), inner_lr=0.01, problem="regression"
    )


def test_a_learner_with_its_own_adaptation_must_register_signatures(
    tmp_path, monkeypatch
):
    with pytest.raises(
        ValueError, match="'closed_form' \\(it overrides adapt\\).*register"
    ):
        export_learner(_learner(), str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()

    monkeypatch.setitem(saved_model._BY_LEARNER, "closed_form", closed_form_signatures)
    learner = _learner()
    exported = export_learner(learner, str(tmp_path / "model"))
    assert exported.metadata["signatures"] == "adapt_and_predict,metadata"
    loaded = tf.saved_model.load(exported.path)
    support_y = np.array([[1.0], [3.0]], np.float32)
    query_x = np.array([[0.5], [-2.0]], np.float32)
    served = loaded.signatures["serving_default"](
        support_x=tf.zeros([2, 1]),
        support_y=tf.constant(support_y),
        query_x=tf.constant(query_x),
    )["y"]
    expected = learner.forward(
        learner.adapt(None, tf.constant(support_y)), tf.constant(query_x)
    )
    np.testing.assert_allclose(served.numpy(), expected.numpy(), atol=1e-6)
    register_signatures(
        "closed_form", closed_form_signatures
    )  # the public way, same effect
    assert saved_model.signature_builder(learner) is closed_form_signatures


def test_a_builder_without_the_default_signature_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(
        saved_model._BY_LEARNER,
        "closed_form",
        lambda learner, images: {"predict": tf.function(lambda: 0)},
    )
    with pytest.raises(ValueError, match="must include 'adapt_and_predict'"):
        export_learner(_learner(), str(tmp_path / "model"))
