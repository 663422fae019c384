"""MetaBatchNorm: Keras' forward values, exact second derivatives, reference rows."""

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import floatx, tiny_conv
from tfmeta.models import MetaBatchNorm, conv4, mlp, normalization_reference


def test_forward_equals_keras_batch_normalization_in_training_mode():
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 5, 5, 3)), tf.float32)
    ours = MetaBatchNorm(epsilon=1e-3)
    theirs = keras.layers.BatchNormalization(epsilon=1e-3)
    np.testing.assert_allclose(
        ours(x).numpy(), theirs(x, training=True).numpy(), atol=1e-5
    )


def test_second_derivative_of_variance_is_exact():
    """d^2/dx^2 of sum(normalized^3): ours equals finite differences of the first derivative."""
    with floatx("float64"):
        layer = MetaBatchNorm(epsilon=1e-3)
        x0 = tf.constant(np.random.default_rng(1).normal(size=(5, 2)))
        direction = tf.constant(np.random.default_rng(2).normal(size=(5, 2)))
        layer(x0)

        def grad(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(layer(x) ** 3)
            return tape.gradient(y, x)

        with tf.GradientTape() as outer:
            outer.watch(x0)
            with tf.GradientTape() as inner:
                inner.watch(x0)
                y = tf.reduce_sum(layer(x0) ** 3)
            g = inner.gradient(y, x0)
            directional = tf.reduce_sum(g * direction)
        hessian_direction = outer.gradient(directional, x0)
        eps = 1e-6
        numeric = (grad(x0 + eps * direction) - grad(x0 - eps * direction)) / (2 * eps)
        np.testing.assert_allclose(
            hessian_direction.numpy(), numeric.numpy(), rtol=1e-6, atol=1e-8
        )


def test_reference_rows_set_the_statistics():
    layer = MetaBatchNorm(center=False, scale=False, epsilon=0.0)
    support = tf.constant([[1.0], [3.0]])
    query = tf.constant([[5.0], [2.0], [-1.0]])
    with normalization_reference(2):
        out = layer(tf.concat([support, query], 0)).numpy().ravel()
    # support mean 2, variance 1
    np.testing.assert_allclose(out, [-1.0, 1.0, 3.0, 0.0, -3.0], atol=1e-6)
    # outside the context the whole batch is used again
    full = layer(query).numpy().ravel()
    np.testing.assert_allclose(full.mean(), 0.0, atol=1e-6)


def test_conv4_shapes_and_pooling_variants():
    strided = conv4(5, pooling="stride", seed=0)
    pooled = conv4(5, pooling="max", seed=0)
    x = tf.zeros([3, 28, 28, 1])
    assert strided(x).shape == (3, 5) and pooled(x).shape == (3, 5)
    # max-pool net: 28 -> 14 -> 7 -> 4 -> 2, head sees 2*2*64 features
    assert pooled.layers[-1].kernel.shape == (256, 5)
    # strided net averages the last 2x2 map: head sees 64 features
    assert strided.layers[-1].kernel.shape == (64, 5)
    assert sum(isinstance(layer, MetaBatchNorm) for layer in strided.layers) == 4
    assert mlp().count_params() == 1 * 40 + 40 + 40 * 40 + 40 + 40 + 1


def test_seeded_models_are_reproducible():
    a, b = tiny_conv(seed=3), tiny_conv(seed=3)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
