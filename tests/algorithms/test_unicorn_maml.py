"""UNICORN-MAML: the shared head start by hand, its invariance to the order
of a task's classes, and its meta-gradient against central finite
differences in float64 (resume, export and serving:
``test_conformance.py``; the user's path: ``test_user_path.py``), and why
the paper's learned shared vector is not learned here: its meta-gradient is
zero."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    check_directional_derivatives,
    classification_task,
    floatx,
    query_loss_after_inner_loop,
    random_directions,
    seed_tensor,
    tiny_conv,
    tiny_mlp,
)
from tfmeta.algorithms import UnicornMAML


def test_every_class_starts_from_the_same_zero_head():
    with floatx("float64"):
        model = tiny_mlp(seed=1, hidden=(5,), output_dim=3, input_dim=4)
        learner = UnicornMAML(model, keras.optimizers.SGD(0.0), inner_lr=0.1)
    task = classification_task(np.random.default_rng(1), 3, 2, 2, shape=(4,))
    params = learner.parameters()
    start = learner.initial_weights(params, task[0], task[1])
    np.testing.assert_array_equal(start[2].numpy(), np.zeros((5, 3)))
    np.testing.assert_array_equal(start[3].numpy(), np.zeros(3))
    for body in (0, 1):
        assert start[body] is params[body]


def test_any_shared_vector_gives_the_same_query_loss_and_its_gradient_is_zero():
    """The paper's learned shared vector w: the query loss after the inner
    loop does not change with w (the softmax's shift invariance), and its
    meta-gradient is zero."""
    with floatx("float64"):
        learner = UnicornMAML(
            tiny_conv(seed=6), keras.optimizers.SGD(0.0), inner_lr=0.5, inner_steps=2
        )
    support_x, support_y, query_x, query_y = classification_task(
        np.random.default_rng(6)
    )
    params = learner.parameters()
    kernel = params[learner.kernel_index]
    w = tf.Variable(
        tf.random.stateless_normal(kernel.shape[:1], [6, 0], dtype=tf.float64)
    )
    b = tf.Variable(tf.constant(0.3, tf.float64))

    def query_loss():
        start = learner.initial_weights(params, support_x, support_y)
        start[learner.kernel_index] = tf.tile(w[:, None], [1, kernel.shape[1]])
        start[learner.bias_index] = tf.fill(kernel.shape[1:], b)
        fast = learner.inner_loop(start, support_x, support_y, 2, True, seed_tensor())
        return learner.loss(learner.predict(fast, query_x, support_x), query_y)

    with tf.GradientTape() as tape:
        loss = query_loss()
    gradient_w, gradient_b = tape.gradient(loss, [w, b])
    zero_start = learner.initial_weights(params, support_x, support_y)
    fast = learner.inner_loop(zero_start, support_x, support_y, 2, False, seed_tensor())
    expected = learner.loss(learner.predict(fast, query_x, support_x), query_y)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-12)
    assert float(tf.reduce_max(tf.abs(gradient_w))) < 1e-12
    assert abs(float(gradient_b)) < 1e-12


def test_adaptation_does_not_depend_on_the_order_of_the_classes():
    """Relabelling a task's classes by a permutation permutes the adapted
    logits' columns, and nothing else (MAML's own head would not)."""
    with floatx("float64"):
        learner = UnicornMAML(
            tiny_conv(seed=2),
            keras.optimizers.SGD(0.0),
            inner_lr=0.5,
            eval_inner_steps=2,
        )
    support_x, support_y, query_x, _ = classification_task(np.random.default_rng(2))
    permutation = np.array([2, 0, 1])
    relabelled = tf.constant(permutation[support_y.numpy()])
    logits = learner.predict(learner.adapt(support_x, support_y), query_x, support_x)
    permuted = learner.predict(learner.adapt(support_x, relabelled), query_x, support_x)
    np.testing.assert_allclose(
        permuted.numpy()[:, permutation], logits.numpy(), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("transductive", [True, False])
def test_meta_gradient_matches_finite_differences(steps, transductive):
    """Second order through the inner steps to theta's body (conv net with
    batch norm); theta's own head gets zero meta-gradient."""
    with floatx("float64"):
        learner = UnicornMAML(
            tiny_conv(seed=3),
            keras.optimizers.SGD(0.0),
            inner_lr=0.5,
            inner_steps=steps,
            transductive=transductive,
        )
    task = classification_task(np.random.default_rng(3))
    gradient = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    assert float(tf.reduce_max(tf.abs(gradient[learner.kernel_index]))) == 0.0
    assert float(tf.reduce_max(tf.abs(gradient[learner.bias_index]))) == 0.0
    assert float(tf.norm(gradient[0])) > 1e-4
    check_directional_derivatives(
        learner,
        gradient,
        lambda: query_loss_after_inner_loop(learner, task, steps),
        random_directions(learner, 3),
        epsilon=1e-5,
        rel=1e-5,
    )


def test_regression_is_refused_in_one_line():
    with pytest.raises(
        ValueError, match=r"^unicorn_maml classifies .*problem='regression'"
    ):
        UnicornMAML(
            tiny_mlp(seed=1),
            keras.optimizers.SGD(0.0),
            inner_lr=0.1,
            problem="regression",
        )
