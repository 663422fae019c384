"""ConvNet's two ways of running conv4 with less work, the first block
pooled before it normalizes (tfmeta.models.pool_first) and the
convolutions' biases handed to the batch norm after them: the function and
first and second derivatives of the layers run one by one, in every
statistics context, on TensorFlow ops and on the native kernels, and where
each applies; the native patch moments against the TensorFlow ops'."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import classification_task, floatx
from tfmeta.algorithms import MAML
from tfmeta.core import functional
from tfmeta.models import batch_norm, conv4, kernels, pool_first
from tfmeta.models.conv import ConvNet, up_to_head

MODES = ("transductive", "reference_rows", "support_statistics", "given_statistics")
# (pool_first, fold_bias), each against the layers one by one
SETTINGS = ((True, True), (True, False), (False, True))


def _model(channels=3, size=9, seed=0):
    """Odd maps (9 -> 5 -> 3): the "same" pooling's partial windows; three
    input channels: the patches' layout; gammas of both signs; biases."""
    model = conv4(
        4,
        input_shape=(size, size, channels),
        filters=6,
        depth=2,
        pooling="max",
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    for name in ("norm0", "norm1"):
        layer = model.get_layer(name)
        layer.gamma.assign(rng.choice([-1.0, 1.0], 6) * rng.uniform(0.5, 2.0, 6))
        layer.beta.assign(rng.normal(0.0, 0.5, 6))
    for name in ("conv0", "conv1"):
        model.get_layer(name).bias.assign(rng.normal(0.0, 0.5, 6))
    return model


def _outputs(model, params, x, mode):
    if mode == "transductive":
        return functional.forward(model, params, x)
    if mode == "reference_rows":
        return functional.forward(model, params, x, num_reference=5)
    if mode == "support_statistics":
        support, query = functional.support_and_query(model, params, x[:5], x[5:])
        return tf.concat([support, query], 0)
    # Moments given (as MAML++'s running statistics): the bias counts.
    rng = np.random.default_rng(7)
    given = {
        name: (rng.normal(0.0, 1.0, 6), rng.uniform(0.5, 2.0, 6))
        for name in ("norm0", "norm1")
    }
    with batch_norm.fixed_statistics(given):
        return functional.forward(model, params, x)


def _derivatives(model, x, mode, setting=(False, False)):
    """Outputs, the gradient of a loss and the gradient of a function of that
    gradient (second derivatives), as one flat vector each, and the biases'
    gradient."""
    model.pool_first, model.fold_bias = setting
    params = [v.value for v in model.trainable_variables]
    weights = tf.sin(tf.range(4, dtype=x.dtype))
    with tf.GradientTape() as outer:
        outer.watch(params)
        with tf.GradientTape() as inner:
            inner.watch(params)
            outputs = _outputs(model, params, x, mode)
            loss = tf.reduce_sum(tf.square(outputs) * weights)
        grads = inner.gradient(loss, params)
        of_grads = tf.add_n([tf.reduce_sum(tf.sin(g)) for g in grads])
    second = outer.gradient(of_grads, params)
    flat = lambda ts: np.concatenate([np.ravel(t) for t in ts])
    names = [v.path for v in model.trainable_variables]
    biases = [g.numpy() for g, n in zip(grads, names) if n.endswith("bias")]
    return outputs.numpy(), flat(grads), flat(second), biases


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("mode", MODES)
def test_equals_the_layers_one_by_one_to_second_order(mode, setting, form):
    with floatx("float64"):
        model = _model()
        x = tf.constant(np.random.default_rng(1).uniform(size=(12, 9, 9, 3)))
        with form():
            run = _derivatives(model, x, mode, setting)
        plain = _derivatives(model, x, mode)
    np.testing.assert_allclose(run[0], plain[0], rtol=1e-11, atol=1e-12)
    for got, want in zip(run[1:3], plain[1:3]):
        # Global norms: a conv bias before batch norm with the maps' own
        # moments has an exactly-zero gradient, round-off on the plain side.
        assert np.linalg.norm(got - want) < 1e-11 * np.linalg.norm(want)
        assert np.linalg.norm(want) > 1.0
    # The biases handed to the batch norm (conv0's by the pooled block too):
    # with the maps' own moments their gradient is an exact zero, with given
    # moments it is not.
    handed = run[3][: 2 if setting[1] else 1]
    for got in handed:
        if mode == "given_statistics":
            assert np.abs(got).max() > 1e-3
        else:
            assert np.all(got == 0.0)


def test_maml_meta_gradient_and_the_block_runs(monkeypatch):
    """Second-order MAML through the learner's compiled step: the same
    meta-gradient in float64 with the block and without; the block ran."""
    calls = []
    block = pool_first.block
    monkeypatch.setattr(
        pool_first, "block", lambda *args: calls.append(1) or block(*args)
    )
    task = classification_task(np.random.default_rng(3), dtype="float64")
    gradients = {}
    with floatx("float64"):
        for pool in (True, False):
            model = conv4(
                3, input_shape=(8, 8, 1), filters=4, depth=2, pooling="max", seed=2
            )
            model.pool_first = pool
            learner = MAML(
                model, keras.optimizers.SGD(1.0), inner_lr=0.4, inner_steps=2
            )
            before = len(calls)
            result = learner.meta_step.task(*task, tf.constant([0, 0], tf.int64))
            gradients[pool] = np.concatenate(
                [np.ravel(g) for g in result.meta_gradient]
            )
            assert (len(calls) > before) == pool
    want = gradients[False]
    assert np.linalg.norm(gradients[True] - want) < 1e-11 * np.linalg.norm(want)


def test_float32_moments_come_from_the_patches_exactly():
    """float32 against the layers one by one in float64: the moments of 150
    Omniglot-like binary images (117,600 positions) from the patches'
    covariance, no sum over every position."""
    rng = np.random.default_rng(4)
    images = (rng.uniform(size=(150, 28, 28, 1)) > 0.85).astype(np.float64)
    with floatx("float64"):
        exact_model = conv4(5, pooling="max", seed=0, pool_first=False)
        exact = exact_model(tf.constant(images)).numpy()
    model = conv4(5, pooling="max", seed=0)
    model.set_weights([w.astype(np.float32) for w in exact_model.get_weights()])
    got = model(tf.constant(images, tf.float32)).numpy()
    np.testing.assert_allclose(got, exact, rtol=0, atol=2e-5 * np.abs(exact).max())


@pytest.mark.parametrize(
    "shape", [(3, 7, 9, 1), (2, 5, 4, 3), (1, 1, 1, 2), (2, 6, 6, 5)]
)
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
def test_native_patch_moments_are_the_tensorflow_ops(shape, dtype, library):
    """Values (sums in double: closer to exact than the float32 matmul) and
    the input's gradient; channels 1-5, even, odd and one-pixel maps."""
    rng = np.random.default_rng(sum(shape))
    x = tf.constant(rng.normal(size=shape), dtype)
    exact = pool_first.patch_statistics(tf.cast(x, tf.float64), shape[-1])
    weights = [tf.constant(rng.normal(size=t.shape), dtype) for t in exact]
    results = []
    for context in (kernels.native_kernels, contextlib.nullcontext):
        with context(), tf.GradientTape() as tape:
            tape.watch(x)
            moments = pool_first.patch_statistics(x, shape[-1])
            loss = sum(tf.reduce_sum(m * w) for m, w in zip(moments, weights))
        results.append([*moments, tape.gradient(loss, x)])
    tolerance = 1e-12 if dtype == tf.float64 else 2e-6
    for got, want in zip(results[0][:2], exact):
        np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(
        results[0][2], results[1][2], rtol=tolerance, atol=tolerance
    )
    assert np.abs(results[1][2]).max() > 1e-3
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[N, H, W, C\]"):
        library.tfmeta_patch_moments(tf.zeros([2, 3, 3], dtype))


def test_where_it_applies():
    one, three, wide = (
        tf.zeros([2, 28, 28, 1]),
        tf.zeros([2, 28, 28, 3]),
        tf.zeros([2, 14, 14, 16]),
    )
    assert pool_first.applies(conv4(5, pooling="max").layers, one)
    assert pool_first.applies(conv4(5, (28, 28, 3), pooling="max").layers, three)
    assert not pool_first.applies(conv4(5, pooling="stride").layers, one)
    assert not pool_first.applies(
        conv4(5, pooling="max").layers, tf.cast(one, tf.float64)
    )
    capped = [
        keras.layers.Conv2D(8, 3, padding="same"),
        *conv4(5, pooling="max").layers[1:],
    ]
    capped[2] = keras.layers.ReLU(max_value=6.0)
    assert not pool_first.applies(capped, one)
    model = conv4(5, (14, 14, 16), pooling="max")
    assert not pool_first.applies(model.layers, wide)
    # Where it does not apply the stack runs its layers: same outputs.
    x = tf.constant(np.random.default_rng(5).normal(size=(4, 14, 14, 16)), tf.float32)
    out = model(x)
    model.pool_first = False
    np.testing.assert_array_equal(out, model(x))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = conv4(5, pooling="max")
    finally:
        keras.config.set_dtype_policy(previous)
    assert not pool_first.applies(mixed.layers, tf.cast(one, tf.float16))
    assert mixed(one).shape == (2, 5)


def test_the_embedding_up_to_the_head_shares_weights_and_pools_first(monkeypatch):
    calls = []
    block = pool_first.block
    monkeypatch.setattr(
        pool_first, "block", lambda *args: calls.append(1) or block(*args)
    )
    model = conv4(5, pooling="max", seed=0)
    embedding = up_to_head(model, "f_phi")
    assert isinstance(embedding, ConvNet)
    assert [id(v) for v in embedding.trainable_variables] == [
        id(v) for v in model.trainable_variables[:-2]
    ]
    x = tf.constant(np.random.default_rng(6).uniform(size=(6, 28, 28, 1)), tf.float32)
    features = embedding(x)
    assert calls and features.shape == (6, 256)
    reference = keras.Model(model.inputs, model.layers[-2].output)
    np.testing.assert_allclose(features, reference(x), rtol=1e-4, atol=1e-4)


def test_the_settings_round_trip_through_the_config():
    model = conv4(5, pooling="max", pool_first=False, fold_bias=False)
    copy = ConvNet.from_config(model.get_config())
    assert isinstance(copy, ConvNet) and copy.pool_first is False
    assert copy.fold_bias is False
    assert [w.shape for w in copy.weights] == [w.shape for w in model.weights]


def test_keras_fit_gets_a_gradient_for_every_weight(recwarn):
    """The handed biases' gradient is a zero, not missing: Keras' own
    training step warns of no variable."""
    model = conv4(3, input_shape=(8, 8, 1), filters=4, depth=2, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(8).uniform(size=(6, 8, 8, 1)).astype("float32")
    model.fit(x, np.array([0, 1, 2] * 2), epochs=1, verbose=0)
    assert not [w for w in recwarn if "Gradients do not exist" in str(w.message)]
