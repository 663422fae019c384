"""tfmeta.models.max_pool: the function and first and second derivatives of
tf.nn.max_pool2d(x, 2, 2, "SAME") and its registered gradients, bit for bit,
ties included, on even and odd maps, on TensorFlow ops and on the native
kernels; a ReLU moved after it changes none of them; where ConvNet uses both;
and which of the two forms a meta-train step and an exported model get."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.native import meta_train_step_ops, op_types
from tfmeta.models import conv4, kernels, max_pool


def _derivatives(pool, x):
    """The pooled maps, the gradient of a loss of them and the gradient of a
    function of that gradient (the second derivative MAML takes)."""
    weights = tf.cos(tf.range(tf.size(pool(x)), dtype=x.dtype))
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = pool(x)
            loss = tf.reduce_sum(tf.square(y) * tf.reshape(weights, tf.shape(y)))
        grad = inner.gradient(loss, x)
        of_grad = tf.reduce_sum(tf.sin(3.0 * grad) * x)
    return y, grad, outer.gradient(of_grad, x)


def _plain(x):
    return tf.nn.max_pool2d(x, 2, 2, "SAME")


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 1)])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_the_same_figures_as_max_pool2d_ties_included(size, dtype, form):
    rng = np.random.default_rng(sum(size))
    # Values from {0, 1, 2}: most windows hold a tie, some at their maximum.
    x = tf.constant(rng.integers(0, 3, (3, *size, 4)), dtype)
    with form():
        ours = _derivatives(max_pool.max_pool, x)
    for got, want in zip(ours, _derivatives(_plain, x)):
        np.testing.assert_array_equal(got, want)
    # The second derivative is not all zeros: the comparison means something.
    assert np.abs(_derivatives(_plain, x)[2]).max() > 0.1


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 1)])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_a_relu_after_it_gives_the_figures_of_the_relu_before_it(size, dtype, form):
    rng = np.random.default_rng(sum(size))
    # Ties at negative, zero and positive maxima.
    x = tf.constant(rng.integers(-2, 3, (3, *size, 4)), dtype)

    def after(x):
        return tf.nn.relu(max_pool.max_pool(x))

    def before(x):
        return _plain(tf.nn.relu(x))

    want = _derivatives(before, x)
    with form():
        ours = _derivatives(after, x)
    for got, expected in zip(ours, want):
        np.testing.assert_array_equal(got, expected)
    assert np.abs(want[2]).max() > 0.1
    assert (want[1].numpy() == 0).mean() < 0.95  # gradients pass as well


NATIVE_OPS = {"TfmetaMaxPool", "TfmetaMaxPoolScatter", "TfmetaMaxPoolGather"}


def test_in_a_compiled_function_with_unknown_batch_and_sizes(form):
    spec = tf.TensorSpec([None, None, None, 2], tf.float32)
    compiled = tf.function(lambda x: _derivatives(max_pool.max_pool, x))
    with form():
        concrete = compiled.get_concrete_function(spec)
    native = form is kernels.native_kernels
    types = op_types(concrete.graph)
    assert (NATIVE_OPS <= types) == native
    assert ("MaxPoolGrad" in types) != native
    for size in [(5, 6), (8, 8)]:  # one trace, odd and even maps
        x = np.random.default_rng(0).integers(0, 3, (2, *size, 2))
        x = tf.constant(x, tf.float32)
        for got, want in zip(concrete(x), _derivatives(_plain, x)):
            np.testing.assert_array_equal(got, want)


def test_xla_compiled_functions_pool_on_tensorflow_ops(library):
    """XLA has no kernel for the native ops: a function compiled with it,
    traced within ``native_kernels``, gets TensorFlow's pooling."""
    x = np.random.default_rng(2).integers(0, 3, (2, 7, 8, 3))
    x = tf.constant(x, tf.float32)
    compiled = tf.function(
        lambda x: _derivatives(max_pool.max_pool, x), jit_compile=True
    )
    with kernels.native_kernels():
        concrete = compiled.get_concrete_function(x)
    assert not NATIVE_OPS & op_types(concrete.graph)
    # (XLA's own sin and cos differ from TensorFlow's by an ulp or two.)
    for got, want in zip(concrete(x), _derivatives(_plain, x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_native_kernels_refuse_shapes_that_do_not_pool(library):
    y, position = library.tfmeta_max_pool(tf.zeros([1, 5, 4, 2]))
    assert y.shape == position.shape == (1, 3, 2, 2) and position.dtype == tf.uint8
    with pytest.raises(tf.errors.InvalidArgumentError, match="pool to the pooled"):
        library.tfmeta_max_pool_scatter(y, position, 7, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pooled shape"):
        library.tfmeta_max_pool_gather(tf.zeros([1, 8, 4, 2]), position)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, H, W, C\]"):
        library.tfmeta_max_pool(tf.zeros([5, 4, 2]))


def test_meta_train_steps_run_the_native_kernels_and_exports_do_not(library):
    """A learner's meta-train step (traced within ``native_kernels``) pools
    on the native kernels where they built; a function traced outside it,
    as an export is, never does."""
    from tfmeta.algorithms import MAML

    types, learner, _ = meta_train_step_ops(MAML, inner_lr=0.1, inner_steps=1)
    model = learner.model
    assert NATIVE_OPS <= types and "MaxPoolGrad" not in types
    x = tf.zeros([2, 8, 8, 1])
    exported = tf.function(lambda x: _derivatives(model, x)).get_concrete_function(x)
    assert not NATIVE_OPS & op_types(exported.graph)


def test_window_sum_pads_like_same():
    x = tf.constant(np.arange(2 * 3 * 5 * 2, dtype=np.float64).reshape(2, 3, 5, 2))
    want = np.zeros((2, 2, 3, 2))
    for i in range(3):
        for j in range(5):
            want[:, i // 2, j // 2] += x.numpy()[:, i, j]
    np.testing.assert_array_equal(max_pool.window_sum(x), want)


def test_which_layers_it_replaces_and_conv_net_uses_it(monkeypatch):
    assert max_pool.replaces(keras.layers.MaxPooling2D(2, padding="same"))
    assert not max_pool.replaces(keras.layers.MaxPooling2D(2))  # "valid"
    assert not max_pool.replaces(keras.layers.MaxPooling2D(3, 2, padding="same"))
    assert not max_pool.replaces(
        keras.layers.MaxPooling2D(2, padding="same", data_format="channels_first")
    )
    assert not max_pool.replaces(keras.layers.AveragePooling2D(2, padding="same"))
    assert max_pool.commutes(keras.layers.ReLU())
    for layer in (
        keras.layers.ReLU(max_value=6.0),
        keras.layers.ReLU(negative_slope=0.1),
        keras.layers.ReLU(threshold=0.5),
        keras.layers.LeakyReLU(),
        keras.layers.Activation("tanh"),
    ):
        assert not max_pool.commutes(layer)
    calls = []
    pool = max_pool.max_pool
    monkeypatch.setattr(max_pool, "max_pool", lambda x: calls.append(1) or pool(x))
    model = conv4(5, pooling="max", seed=0)
    x = tf.constant(np.random.default_rng(1).uniform(size=(2, 28, 28, 1)), tf.float32)
    out = model(x)
    assert len(calls) == 4  # the pooled first block's and the three layers'
    model.pool_first = model.fold_bias = False
    np.testing.assert_allclose(model(x), out, rtol=1e-5, atol=1e-5)
    assert len(calls) == 4  # the layers one by one: Keras's pooling
    model.pool_first = model.fold_bias = True
    graph = tf.function(model).get_concrete_function(x).graph
    relus = [op.outputs[0].shape for op in graph.get_operations() if op.type == "Relu"]
    # Every ReLU runs on pooled maps: 28 -> 14 -> 7 -> 4 -> 2.
    assert [tuple(shape) for shape in relus] == [
        (2, size, size, 64) for size in (14, 7, 4, 2)
    ]
