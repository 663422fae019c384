"""Copies at evaluation and serving (test-time augmentation): the support
set followed by its copies under fixed maps, the same maps for every
example whatever its position; each query answered by the mean class
probabilities of its own copies; used by evaluation and refused where it
cannot apply."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.algorithms import PrototypicalNetwork
from tfmeta.configs import get_config
from tfmeta.core.ensemble import mean_probability_logits
from tfmeta.data.augment import (
    COPIES_SEED,
    affine_matrices,
    check_copies,
    distorted_copies,
    transform,
    with_support_copies,
)
from tfmeta.models import conv4


def support(count=6, size=28, seed=0):
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size, 1), np.float32)
    images[:, 8:20, 10:14, 0] = rng.random((count, 12, 4))  # a stroke each
    labels = np.arange(count, dtype=np.int32) % 3
    return tf.constant(images), tf.constant(labels)


def test_no_copies_is_the_support_set_itself():
    x, y = support()
    got_x, got_y = with_support_copies(x, y, 0, 1.0)
    assert got_x is x and got_y is y


def test_copy_j_is_every_example_under_map_j():
    x, y = support()
    copies = 3
    got_x, got_y = with_support_copies(x, y, copies, 1.0)
    assert got_x.shape == (4 * 6, 28, 28, 1)
    np.testing.assert_array_equal(got_y, np.tile(y.numpy(), 4))
    np.testing.assert_array_equal(got_x[:6], x)
    maps = affine_matrices(copies, tf.constant(COPIES_SEED, tf.int64), 1.0)
    for j in range(copies):
        for i in range(6):
            one = transform(x[i : i + 1], maps[j : j + 1])
            np.testing.assert_allclose(got_x[6 * (j + 1) + i], one[0], atol=1e-6)
        # a map that moves the strokes
        assert np.abs(got_x[6 * (j + 1) : 6 * (j + 2)] - x).max() > 0.1


def test_the_same_maps_whatever_the_order():
    x, y = support()
    order = np.array([4, 0, 5, 2, 1, 3])
    plain_x, _ = with_support_copies(x, y, 2, 1.0)
    shuffled_x, shuffled_y = with_support_copies(
        tf.gather(x, order), tf.gather(y, order), 2, 1.0
    )
    for j in range(3):
        np.testing.assert_allclose(
            shuffled_x[6 * j : 6 * (j + 1)],
            tf.gather(plain_x[6 * j : 6 * (j + 1)], order),
            atol=1e-6,
        )
    np.testing.assert_array_equal(shuffled_y[:6], tf.gather(y, order))


@pytest.mark.parametrize(
    "kind, copies, strength, message",
    [
        ("support", -1, 1.0, "support_copies must be in [0, 64], got -1"),
        ("support", 65, 1.0, "support_copies must be in [0, 64], got 65"),
        ("query", 2.5, 1.0, "query_copies must be an integer, got 2.5"),
        ("support", 2, 0.0, "support_augment must be in (0, 3.0], got 0.0"),
        ("query", 2, 4.0, "query_augment must be in (0, 3.0], got 4.0"),
    ],
)
def test_bad_settings_are_one_line(kind, copies, strength, message):
    with pytest.raises(ValueError) as error:
        check_copies(kind, copies, strength)
    assert str(error.value) == message


def protonet(copies, query_copies=0):
    keras.utils.set_random_seed(3)
    model = conv4(3, (28, 28, 1), filters=8, pooling="max")
    return PrototypicalNetwork(
        model,
        keras.optimizers.Adam(1e-3),
        support_copies=copies,
        support_augment=1.0,
        query_copies=query_copies,
        query_augment=1.5,
    )


def test_evaluation_adapts_to_the_copies():
    x, y = support()
    query = support(count=4, seed=1)[0]
    copied = protonet(2)
    plain = protonet(0)
    for a, b in zip(copied.variables, plain.variables):
        np.testing.assert_array_equal(a, b)  # the same theta
    expected = plain.query_outputs(*with_support_copies(x, y, 2, 1.0), query, 0)
    _, _, outputs = copied.eval_task(x, y, query, tf.zeros([4], tf.int32), 0)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    _, _, unchanged = plain.eval_task(x, y, query, tf.zeros([4], tf.int32), 0)
    assert np.abs(unchanged.numpy() - expected.numpy()).max() > 1e-4
    assert copied.describe()["support_copies"] == 2
    assert "support_copies" not in plain.describe()


def test_a_query_is_answered_by_its_own_copies():
    x, y = support()
    query = support(count=4, seed=1)[0]
    copied = protonet(1, query_copies=3)
    plain = protonet(1)
    _, _, outputs = copied.eval_task(x, y, query, tf.zeros([4], tf.int32), 0)
    # Each query and its 3 copies, answered by the learner without query copies.
    each = plain.query_outputs(
        *with_support_copies(x, y, 1, 1.0), distorted_copies(query, 3, 1.5), 0
    )
    expected = mean_probability_logits(tf.split(each, 4))
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    # A query's answer is the same alone: its copies are its own.
    alone = copied.served_outputs(x, y, query[2:3])
    np.testing.assert_allclose(alone[0], outputs[2], rtol=1e-5, atol=1e-5)
    _, _, without = plain.eval_task(x, y, query, tf.zeros([4], tf.int32), 0)
    assert np.abs(without.numpy() - outputs.numpy()).max() > 1e-4
    assert copied.describe()["query_copies"] == 3


def test_refused_where_there_are_no_images():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="support_copies=2 distorts images"):
        PrototypicalNetwork(model, keras.optimizers.Adam(1e-3), support_copies=2)
    with pytest.raises(
        ValueError, match="support_copies distorts images; dataset=sinusoid has none"
    ):
        get_config("maml", "sinusoid", support_copies=2)
    with pytest.raises(ValueError, match="support_copies must be in"):
        get_config("protonet", "omniglot", support_copies=100)
    with pytest.raises(
        ValueError, match="query_copies distorts images; dataset=embeddings"
    ):
        get_config("nearest_centroid", "embeddings", query_copies=2)
