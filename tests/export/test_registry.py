"""A learner says what an export serves: its own serving functions, checked
for the default signature."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_mlp
from tfmeta.algorithms import MAML
from tfmeta.export import export_learner


class ClosedForm(MAML):
    """A learner with its own adaptation: the fast weights are theta shifted by
    mean(support_y), served by its own function."""

    name = "closed_form"

    def adapt(self, support_x, support_y, inner_steps=None):
        shift = tf.reduce_mean(support_y)
        return [p + shift if p.shape.rank == 1 else p for p in self.parameters()]

    def serving_functions(self, preprocessing=None):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 1], tf.float32, name="support_x"),
                tf.TensorSpec([None, 1], tf.float32, name="support_y"),
                tf.TensorSpec([None, 1], tf.float32, name="query_x"),
            ]
        )
        def adapt_and_predict(support_x, support_y, query_x):
            return {"y": self.forward(self.adapt(support_x, support_y), query_x)}

        return {"adapt_and_predict": adapt_and_predict}


class NoDefault(ClosedForm):
    def serving_functions(self, preprocessing=None):
        return {"predict": tf.function(lambda: 0)}


def _learner(cls=ClosedForm):
    return cls(
        tiny_mlp(), keras.optimizers.SGD(0.1), inner_lr=0.01, problem="regression"
    )


def test_a_learner_serves_its_own_functions(tmp_path):
    learner = _learner()
    exported = export_learner(learner, str(tmp_path / "model"))
    assert exported.metadata["signatures"] == "adapt_and_predict,metadata"
    assert exported.metadata["algorithm"] == "closed_form"
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
    # theta shifted by mean(support_y) = 2 in every bias: not the plain model
    plain = learner.forward(learner.parameters(), tf.constant(query_x))
    assert not np.allclose(served.numpy(), plain.numpy(), atol=1e-3)


def test_serving_functions_without_the_default_signature_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must include 'adapt_and_predict'"):
        export_learner(_learner(NoDefault), str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()
