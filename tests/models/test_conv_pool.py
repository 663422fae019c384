"""tfmeta.models.conv_pool: the native pooled convolution gives the figures
and the first and second derivatives (kernel and input) of the composed
TensorFlow ops, on even, odd and one-pixel maps, channel counts with and
without a compiled path and filter counts off the vector block; ties pick
the composed ops' position; bad shapes are refused in one line; and which
form a meta-train step and an exported model get."""

import numpy as np
import pytest
import tensorflow as tf

from tests.native import meta_train_step_ops, op_types
from tfmeta.models import conv_pool, kernels, max_pool

NATIVE_OPS = {"TfmetaConvPool", "TfmetaConvPoolAt", "TfmetaConvPoolFilterGrad"}


def _composed(x, kernel):
    return max_pool.max_pool(tf.nn.conv2d(x, kernel, 1, "SAME"))


def _derivatives(function, x, kernel):
    """The pooled maps; the gradients of a loss of them with respect to the
    kernel and the input; and the gradients with respect to both of a
    function of the kernel's gradient (the second derivative MAML takes)."""
    weights = tf.cos(tf.range(tf.size(function(x, kernel)), dtype=x.dtype))
    with tf.GradientTape(persistent=True) as outer:
        outer.watch([x, kernel])
        with tf.GradientTape() as inner:
            inner.watch([x, kernel])
            y = function(x, kernel)
            loss = tf.reduce_sum(tf.square(y) * tf.reshape(weights, tf.shape(y)))
        kernel_grad, x_grad = inner.gradient(loss, [kernel, x])
        of_grad = tf.reduce_sum(tf.sin(3.0 * kernel_grad) * kernel)
    second = outer.gradient(of_grad, [kernel, x])
    return [y, kernel_grad, x_grad, *second]


# Channels 1-4 run code compiled for their count, 6 the general loop;
# 16 filters fill the float64 vector block exactly, 5 and 17 do not.
@pytest.mark.parametrize(
    "size,channels,filters",
    [((8, 8), 1, 16), ((7, 9), 3, 5), ((1, 1), 2, 17), ((6, 5), 6, 9), ((5, 4), 4, 33)],
)
def test_the_figures_and_derivatives_of_the_composed_ops(
    size, channels, filters, library
):
    rng = np.random.default_rng(sum(size) + channels)
    x = tf.constant(rng.normal(size=(3, *size, channels)))
    kernel = tf.constant(rng.normal(size=(3, 3, channels, filters)))
    with kernels.native_kernels():
        ours = _derivatives(conv_pool.conv_pool, x, kernel)
    want = _derivatives(_composed, x, kernel)
    for got, expected in zip(ours, want):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # Every derivative is there and not all zeros: the comparison means something.
    assert all(np.abs(value).max() > 1e-3 for value in want)


def test_float32_at_the_first_layer_of_the_omniglot_net(library):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(4, 28, 28, 1)), tf.float32)
    kernel = tf.constant(rng.normal(size=(3, 3, 1, 64)) * 0.3, tf.float32)
    with kernels.native_kernels():
        ours = _derivatives(conv_pool.conv_pool, x, kernel)
    for got, expected in zip(ours, _derivatives(_composed, x, kernel)):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_ties_pick_the_first_maximum_as_max_pool_does(library):
    rng = np.random.default_rng(3)
    # Small integers: every sum is exact, and most windows hold a tie.
    x = tf.constant(rng.integers(0, 2, (3, 7, 8, 2)), tf.float64)
    kernel = tf.constant(rng.integers(-1, 2, (3, 3, 2, 6)), tf.float64)
    pooled, position = library.tfmeta_conv_pool(x, kernel)
    full = tf.nn.conv2d(x, kernel, 1, "SAME")
    want_pooled, want_position = library.tfmeta_max_pool(full)
    np.testing.assert_array_equal(pooled, tf.nn.max_pool2d(full, 2, 2, "SAME"))
    np.testing.assert_array_equal(pooled, want_pooled)
    np.testing.assert_array_equal(position, want_position)
    assert (position.numpy() > 0).mean() > 0.2  # not every window's first
    with kernels.native_kernels():
        ours = _derivatives(conv_pool.conv_pool, x, kernel)
    for got, expected in zip(ours, _derivatives(_composed, x, kernel)):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_the_kernels_refuse_shapes_that_do_not_match(library):
    x = tf.zeros([2, 6, 6, 3])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"kernel must be \[3, 3, 3, F\]"
    ):
        library.tfmeta_conv_pool(x, tf.zeros([3, 3, 2, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="kernel must be"):
        library.tfmeta_conv_pool(x, tf.zeros([5, 5, 3, 4]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="position must be"):
        library.tfmeta_conv_pool_at(
            x, tf.zeros([3, 3, 3, 4]), tf.zeros([2, 3, 3, 5], tf.uint8)
        )
    with pytest.raises(tf.errors.InvalidArgumentError, match="pooled from x"):
        library.tfmeta_conv_pool_filter_grad(
            x, tf.zeros([2, 2, 3, 4], tf.uint8), tf.zeros([2, 2, 3, 4])
        )


def test_other_kernels_and_types_get_the_composed_ops(library):
    x = tf.ones([1, 6, 6, 2], tf.float16)
    with kernels.native_kernels():
        graph = (
            tf.function(conv_pool.conv_pool)
            .get_concrete_function(x, tf.ones([3, 3, 2, 4], tf.float16))
            .graph
        )
        five = (
            tf.function(conv_pool.conv_pool)
            .get_concrete_function(tf.ones([1, 6, 6, 2]), tf.ones([5, 5, 2, 4]))
            .graph
        )
    for traced in (graph, five):
        assert not NATIVE_OPS & {op.type for op in traced.get_operations()}


def test_meta_train_steps_run_it_and_exports_do_not(library):
    from tfmeta.algorithms import MAML

    types, learner, _ = meta_train_step_ops(MAML, inner_lr=0.1, inner_steps=1)
    # Second-order MAML differentiates the kernel's gradient: all three run.
    assert NATIVE_OPS <= types
    exported = tf.function(learner.model).get_concrete_function(tf.zeros([2, 8, 8, 1]))
    assert not NATIVE_OPS & op_types(exported.graph)
