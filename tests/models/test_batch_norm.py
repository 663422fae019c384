"""MetaBatchNorm: Keras' forward values, exact second derivatives, reference rows."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import classification_task, floatx, tiny_conv
from tfmeta.algorithms import MAML
from tfmeta.models import MetaBatchNorm, conv4, mlp, normalization_reference
from tfmeta.models.batch_norm import (
    batch_norm_grad_grad,
    fused_batch_norm,
    normalize_with_moments,
)


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


def _maml_meta_gradient(model, task, transductive=False):
    """Second-order meta-gradient of one task, 2 inner steps, with ``model``'s
    own dtype, and the op types of the graph that computed it."""
    learner = MAML(
        model,
        keras.optimizers.SGD(1.0),
        inner_lr=0.4,
        inner_steps=2,
        transductive=transductive,
    )
    dtype = model.trainable_variables[0].dtype
    task = [tf.cast(t, dtype) if t.dtype.is_floating else t for t in task]
    seed = tf.constant([0, 0], tf.int64)
    result = learner.meta_step.task(*task, seed)
    graph = learner.meta_step._task_fn.get_concrete_function(*task, seed).graph
    op_types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        op_types |= {node.op for node in function.node_def}
    return [g.numpy().astype(np.float64) for g in result.meta_gradient], op_types


def _set_fused(model, fused):
    for layer in model.layers:
        if isinstance(layer, MetaBatchNorm):
            layer.fused = fused


@pytest.mark.parametrize("transductive", [True, False])
def test_fused_kernel_gives_the_exact_second_order_meta_gradient(transductive):
    """float32 through TensorFlow's fused batch norm equals the composed ops in
    float64 (exact, see the finite-difference tests) to float32 round-off;
    Keras' layer, with the mean's gradient stopped in the variance, is ~3e-3
    off. Non-transductive, the queries are normalized with the support set's
    moments through the fused kernels' inference mode."""
    task = classification_task(np.random.default_rng(3), dtype="float32")
    model32 = tiny_conv(pooling="max")
    fused, fused_ops = _maml_meta_gradient(model32, task, transductive)
    _set_fused(model32, False)
    composed32, composed_ops = _maml_meta_gradient(model32, task, transductive)
    assert "FusedBatchNormV3" in fused_ops and "FusedBatchNormGradV3" in fused_ops
    assert "FusedBatchNormV3" not in composed_ops
    with floatx("float64"):
        model64 = tiny_conv(pooling="max")
        model64.set_weights([w.astype(np.float64) for w in model32.get_weights()])
        exact, exact_ops = _maml_meta_gradient(model64, task, transductive)
    assert "FusedBatchNormV3" not in exact_ops  # float64 runs the composed ops

    def relative_error(grads):
        # Global norm: a conv bias before batch norm has an exactly-zero
        # gradient, so its entries are round-off in any float32 computation.
        diff = np.sqrt(sum(np.sum((g - e) ** 2) for g, e in zip(grads, exact)))
        return diff / np.sqrt(sum(np.sum(e**2) for e in exact))

    assert relative_error(fused) < 1e-5
    assert relative_error(composed32) < 1e-5


def _composed_batch_norm(x, scale, offset, epsilon):
    mean = tf.reduce_mean(x, [0, 1, 2])
    variance = tf.reduce_mean(tf.square(x - mean), [0, 1, 2])
    return (x - mean) * tf.math.rsqrt(variance + epsilon) * scale + offset


@pytest.mark.parametrize(
    "connected", [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
)
def test_closed_form_gradient_of_the_backward_pass(connected):
    """batch_norm_grad_grad equals automatic differentiation of the composed
    backward pass in float64, with any of its cotangents absent (None)."""
    rng = np.random.default_rng(5)
    epsilon = 1e-3
    x = tf.constant(rng.normal(size=(5, 3, 3, 4)) * 2.0 + 1.0)
    scale, offset = tf.constant(rng.normal(size=4)), tf.constant(rng.normal(size=4))
    dy = tf.constant(rng.normal(size=x.shape))
    cotangents = [
        tf.constant(rng.normal(size=x.shape)),
        tf.constant(rng.normal(size=4)),
        tf.constant(rng.normal(size=4)),
    ]
    with tf.GradientTape() as outer:
        outer.watch([x, scale, dy])
        with tf.GradientTape() as inner:
            inner.watch([x, scale, offset])
            y = _composed_batch_norm(x, scale, offset, epsilon)
        backward = inner.gradient(y, [x, scale, offset], output_gradients=dy)
        objective = sum(
            c * tf.reduce_sum(b * t) for c, b, t in zip(connected, backward, cotangents)
        )
    expected = outer.gradient(objective, [dy, x, scale], unconnected_gradients="zero")
    ours = batch_norm_grad_grad(
        x,
        scale,
        dy,
        *[t if c else None for c, t in zip(connected, cotangents)],
        epsilon,
    )
    for got, want in zip(ours, expected):
        assert got.shape == want.shape
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12)


def _derivative_terms(normalize, x, scale, offset, weights):
    """``normalize(x, scale, offset)``, the first derivatives of
    ``sum(sin(y) * weights)`` in (x, scale, offset), and the gradient of their
    squared norm (second derivatives)."""
    inputs = [x, scale, offset]
    with tf.GradientTape() as outer:
        outer.watch(inputs)
        with tf.GradientTape() as inner:
            inner.watch(inputs)
            y = normalize(x, scale, offset)
            loss = tf.reduce_sum(tf.sin(y) * weights)
        grads = inner.gradient(loss, inputs)
        objective = sum(tf.reduce_sum(tf.square(g)) for g in grads)
    return y, grads, outer.gradient(objective, inputs)


def test_fused_batch_norm_second_derivatives_equal_the_composed_ops():
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(6, 4, 4, 3)), tf.float32)
    scale = tf.constant(rng.normal(size=3), tf.float32)
    offset = tf.constant(rng.normal(size=3), tf.float32)
    weights = tf.constant(rng.normal(size=x.shape), tf.float32)

    def hessian_terms(batch_norm):
        return _derivative_terms(
            lambda x, scale, offset: batch_norm(x, scale, offset, 1e-3),
            x,
            scale,
            offset,
            weights,
        )[2]

    for got, want in zip(
        hessian_terms(fused_batch_norm), hessian_terms(_composed_batch_norm)
    ):
        scale_of = np.abs(want.numpy()).max()
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6 * scale_of)


def _reference_moments(x, rows):
    reference = x[:rows]
    mean = tf.reduce_mean(reference, [0, 1, 2])
    return mean, tf.reduce_mean(tf.square(reference - mean), [0, 1, 2])


def _composed_with_moments(x, mean, variance, scale, offset, epsilon):
    return (x - mean) * tf.math.rsqrt(variance + epsilon) * scale + offset


def test_normalizing_with_given_moments_has_the_composed_ops_derivatives():
    """normalize_with_moments (the fused kernels' inference mode, moments as
    inputs) against the composed ops: values, first and second derivatives
    through moments taken from the first 3 of 7 rows, to float32 round-off."""
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(7, 4, 4, 3)) * 2.0 + 1.0, tf.float32)
    scale = tf.constant(rng.normal(size=3), tf.float32)
    offset = tf.constant(rng.normal(size=3), tf.float32)
    weights = tf.constant(rng.normal(size=x.shape), tf.float32)

    def terms(normalize):
        y, grads, second = _derivative_terms(
            lambda x, scale, offset: normalize(
                x, *_reference_moments(x, 3), scale, offset, 1e-3
            ),
            x,
            scale,
            offset,
            weights,
        )
        return [y, *grads, *second]

    for got, want in zip(terms(normalize_with_moments), terms(_composed_with_moments)):
        scale_of = np.abs(want.numpy()).max()
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-6 * scale_of)


def test_reference_rows_run_the_fused_kernels_inference_mode():
    """Non-transductive normalization traces FusedBatchNormV3 with
    is_training=False (the moments given); fused=False keeps composed ops."""
    x = tf.constant(np.random.default_rng(2).normal(size=(6, 5, 5, 3)), tf.float32)
    layer = MetaBatchNorm()
    layer.build(x.shape)

    def fused_modes(fused):
        layer.fused = fused

        @tf.function
        def call(x):
            with normalization_reference(2):
                return layer(x)

        graph = call.get_concrete_function(x).graph
        modes = [
            op.get_attr("is_training")
            for op in graph.get_operations()
            if op.type == "FusedBatchNormV3"
        ]
        return modes, call(x).numpy()

    (fused, fused_out), (composed, composed_out) = fused_modes(True), fused_modes(False)
    assert fused == [False] and composed == []
    np.testing.assert_allclose(fused_out, composed_out, atol=1e-5)


def test_fused_kernel_uses_the_fast_weights_of_stateless_call():
    x = tf.constant(np.random.default_rng(4).normal(size=(6, 5, 5, 3)), tf.float32)
    layer = MetaBatchNorm()
    layer.build(x.shape)
    gamma, beta = tf.constant([2.0, 0.5, -1.0]), tf.constant([0.3, 0.0, -0.2])
    outputs = {}
    for fused in (True, False):
        layer.fused = fused
        outputs[fused], _ = layer.stateless_call([gamma, beta], [], x)
    np.testing.assert_allclose(outputs[True].numpy(), outputs[False].numpy(), atol=1e-5)
    assert np.abs(outputs[True].numpy() - layer(x).numpy()).max() > 0.1


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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_collected_and_fixed_statistics(dtype):
    """collect_statistics records the moments of the reference rows;
    fixed_statistics normalizes with given moments (those recorded give the
    same output, others the closed form)."""
    from tfmeta.models.batch_norm import collect_statistics, fixed_statistics

    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(2.0, 3.0, size=(6, 4, 4, 3)), dtype)
    layer = MetaBatchNorm(epsilon=1e-3)
    layer(x)
    with normalization_reference(4), collect_statistics() as seen:
        reference_output = layer(x)
    mean, variance = seen[layer.name]
    np.testing.assert_allclose(mean, x[:4].numpy().mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(variance, x[:4].numpy().var(axis=(0, 1, 2)), rtol=1e-5)
    with fixed_statistics({layer.name: (mean, variance)}):
        fixed_output = layer(x)
    np.testing.assert_allclose(fixed_output, reference_output, rtol=1e-5, atol=1e-5)
    given = (tf.constant([1.0, -2.0, 0.5], dtype), tf.constant([4.0, 0.25, 1.0], dtype))
    with fixed_statistics({layer.name: given}):
        output = layer(x).numpy()
    expected = (x.numpy() - given[0].numpy()) / np.sqrt(given[1].numpy() + 1e-3)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)
    # A layer not named keeps its batch statistics.
    with fixed_statistics({"another_layer": given}):
        np.testing.assert_allclose(layer(x), MetaBatchNorm(epsilon=1e-3)(x), atol=1e-5)
