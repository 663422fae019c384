"""An ensemble answers with the mean of its members' class probabilities:
the closed form, the members' own answers combined, and members that
cannot be combined refused in one line."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.algorithms import PrototypicalNetwork
from tfmeta.core.ensemble import Ensemble, mean_probability_logits
from tfmeta.models import conv4


def test_mean_probability_logits_is_the_log_of_the_mean_probability():
    rng = np.random.default_rng(0)
    outputs = [rng.normal(scale=30.0, size=(7, 5)) for _ in range(3)]
    softmax = [np.exp(o - o.max(-1, keepdims=True)) for o in outputs]
    softmax = [p / p.sum(-1, keepdims=True) for p in softmax]
    expected = np.log(np.mean(softmax, axis=0))
    got = mean_probability_logits([tf.constant(o) for o in outputs]).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-12)


def protonet(seed, n_way=3, size=28):
    keras.utils.set_random_seed(seed)
    model = conv4(n_way, (size, size, 1), filters=8, pooling="max")
    return PrototypicalNetwork(model, keras.optimizers.Adam(1e-3))


def episode(tasks=2, n_way=3, queries=4):
    rng = np.random.default_rng(1)
    support_x = rng.random((tasks, n_way, 28, 28, 1)).astype(np.float32)
    support_y = np.tile(np.arange(n_way, dtype=np.int32), (tasks, 1))
    query_x = rng.random((tasks, queries, 28, 28, 1)).astype(np.float32)
    query_y = rng.integers(0, n_way, (tasks, queries)).astype(np.int32)
    return tuple(tf.constant(t) for t in (support_x, support_y, query_x, query_y))


def test_the_members_answers_combined():
    members = [protonet(1), protonet(2)]
    ensemble = Ensemble(members)
    support_x, support_y, query_x, query_y = episode()
    out = ensemble.meta_eval_step((support_x, support_y, query_x, query_y))
    own = [m.meta_eval_step((support_x, support_y, query_x, query_y)) for m in members]
    expected = mean_probability_logits([o["outputs"] for o in own]).numpy()
    np.testing.assert_allclose(out["outputs"], expected, rtol=1e-6, atol=1e-6)
    accuracy = (expected.argmax(-1) == query_y.numpy()).mean(-1)
    np.testing.assert_allclose(out["accuracy"], accuracy)
    # One task as served: the same answers.
    served = ensemble.served_outputs(support_x[0], support_y[0], query_x[0])
    np.testing.assert_allclose(served, expected[0], rtol=1e-5, atol=1e-5)
    assert ensemble.describe()["ensemble_size"] == 2
    assert ensemble.describe()["members"] == "protonet,protonet"
    # Member 0's model is saved as the model; the rest as the ensemble's own.
    assert len(ensemble.saved_variables) == len(members[1].model.variables)


def test_members_that_cannot_be_combined_are_refused():
    with pytest.raises(ValueError, match="at least 2 members, got 1"):
        Ensemble([protonet(1)])
    with pytest.raises(
        ValueError, match="member 1 .protonet. is 4-way, member 0 3-way"
    ):
        Ensemble([protonet(1), protonet(2, n_way=4)])
    with pytest.raises(
        ValueError, match=r"member 1 .protonet. takes inputs of shape \(32, 32, 1\)"
    ):
        Ensemble([protonet(1), protonet(2, size=32)])
