"""tfmeta.core.squared_distances: the native kernels give the TensorFlow
ops' distances and first and second derivatives, refuse rows that do not
match in one line, and run in Prototypical Networks' meta-train step but
not in its exports."""

import contextlib

import numpy as np
import pytest
import tensorflow as tf

from tests.native import meta_train_step_ops, op_types
from tfmeta.algorithms import PrototypicalNetwork
from tfmeta.core import squared_distances as distances
from tfmeta.models import kernels

NATIVE_OPS = {"TfmetaSquaredDistances", "TfmetaSquaredDistancesGrad"}


def _derivatives(x, c, context):
    """Distances, the gradients of a loss of them and the gradients of a
    function of those gradients."""
    weights = tf.cos(tf.range(x.shape[0] * c.shape[0], dtype=x.dtype))
    with context():
        with tf.GradientTape() as outer:
            outer.watch([x, c])
            with tf.GradientTape() as inner:
                inner.watch([x, c])
                d = distances.squared_distances(x, c)
                loss = tf.reduce_sum(tf.sqrt(d + 1.0) * tf.reshape(weights, d.shape))
            first = inner.gradient(loss, [x, c])
            of_first = sum(tf.reduce_sum(tf.sin(g) * v) for g, v in zip(first, [x, c]))
        second = outer.gradient(of_first, [x, c])
    return [d, *first, *second]


# 16 and 8 features fill the float32 and float64 vectors, 17 and 5 do not;
# 40 queries span two of the gradient's chunks.
@pytest.mark.parametrize(
    "rows,features", [((40, 3), 17), ((7, 5), 16), ((1, 1), 5), ((3, 2), 8)]
)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_the_tensorflow_ops_figures_and_derivatives(rows, features, dtype, library):
    rng = np.random.default_rng(features)
    x = tf.constant(rng.normal(size=(rows[0], features)), dtype)
    c = tf.constant(rng.normal(size=(rows[1], features)), dtype)
    ours = _derivatives(x, c, kernels.native_kernels)
    want = _derivatives(x, c, contextlib.nullcontext)
    tolerance = 1e-12 if dtype == tf.float64 else 1e-5
    for got, expected in zip(ours, want):
        scale = max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(
            got, expected, rtol=tolerance, atol=tolerance * scale
        )
        assert np.abs(expected).max() > 1e-3
    exact = ((x.numpy()[:, None].astype(np.float64) - c.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_allclose(ours[0], exact, rtol=tolerance)


def test_the_kernels_refuse_rows_that_do_not_match(library):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[Q, d\] and \[N, d\]"):
        library.tfmeta_squared_distances(tf.zeros([3, 4]), tf.zeros([2, 5]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"grad must be \[3, 2\]"):
        library.tfmeta_squared_distances_grad(
            tf.zeros([3, 4]), tf.zeros([2, 4]), tf.zeros([2, 3])
        )


def test_meta_train_steps_run_them_and_exports_do_not(library):
    types, learner, tasks = meta_train_step_ops(PrototypicalNetwork)
    assert NATIVE_OPS <= types
    support_x, support_y, query_x, _ = tasks[0]
    predict = tf.function(
        lambda: learner.predict(learner.adapt(support_x, support_y), query_x, support_x)
    )
    assert not NATIVE_OPS & op_types(predict.get_concrete_function().graph)
