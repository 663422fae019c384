"""Reptile's outer update and inner optimizers against hand-computed values."""

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import batch, floatx, seed_tensor
from tfmeta.algorithms import InnerAdam, Reptile, annealed_outer_optimizer


def linear_model():
    """y = w * x + b with w = 0.5, b = 0."""
    model = keras.Sequential(
        [
            keras.Input(shape=(1,)),
            keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(0.5)),
        ]
    )
    return model


def test_reptile_update_is_interpolation_towards_adapted_weights():
    with floatx("float64"):
        model = linear_model()
        epsilon = 0.3
        learner = Reptile(
            model,
            keras.optimizers.SGD(epsilon),
            inner_lr=0.1,
            inner_steps=2,
            problem="regression",
        )
        # task 1: y = 2x on x = 1, 2; task 2: y = -x on x = 1, 2
        xs = tf.constant([[1.0], [2.0]], tf.float64)
        tasks = [(xs, 2.0 * xs, xs, 2.0 * xs), (xs, -1.0 * xs, xs, -1.0 * xs)]

        def sgd(w, b, slope):
            # L = mean((w x + b - slope x)^2) over x in {1, 2}; two steps of SGD with lr 0.1
            x = np.array([1.0, 2.0])
            for _ in range(2):
                residual = w * x + b - slope * x
                w, b = (
                    w - 0.1 * np.mean(2 * residual * x),
                    b - 0.1 * np.mean(2 * residual),
                )
            return w, b

        phi = np.array([0.5, 0.0])
        tilde = np.array([sgd(0.5, 0.0, 2.0), sgd(0.5, 0.0, -1.0)])
        expected = phi + epsilon * (tilde.mean(axis=0) - phi)
        learner.meta_train_step(batch(*tasks))
        got = np.array(
            [
                float(model.trainable_variables[0].numpy().squeeze()),
                float(model.trainable_variables[1].numpy().squeeze()),
            ]
        )
        np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_annealed_outer_step_size_is_linear_to_zero():
    optimizer = annealed_outer_optimizer(1.0, num_steps=10)
    schedule = optimizer._learning_rate
    assert [round(float(schedule(step)), 6) for step in (0, 5, 10)] == [1.0, 0.5, 0.0]


def test_inner_adam_matches_formula():
    adam = InnerAdam(0.01, beta1=0.0, beta2=0.999, epsilon=1e-8)
    params = [tf.constant([1.0, -2.0], tf.float64)]
    state = adam.init(params)
    grads = [
        [tf.constant([0.5, 0.1], tf.float64)],
        [tf.constant([-1.0, 0.2], tf.float64)],
    ]
    m = v = np.zeros(2)
    theta = np.array([1.0, -2.0])
    for step, g in enumerate(grads):
        params, state = adam.update(params, g, state, step)
        g = g[0].numpy()
        t = step + 1
        m = 0.0 * m + g
        v = 0.999 * v + 0.001 * g**2
        theta = theta - 0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.0**t) * m / (
            np.sqrt(v) + 1e-8
        )
    np.testing.assert_allclose(params[0].numpy(), theta, rtol=1e-12)


def test_inner_mini_batches_cycle_through_a_permutation():
    with floatx("float64"):
        learner = Reptile(
            linear_model(),
            keras.optimizers.SGD(1.0),
            inner_lr=0.1,
            inner_batch_size=2,
            problem="regression",
        )
        x = tf.reshape(tf.range(5, dtype=tf.float64), [5, 1])
        seen = [
            learner.inner_batch(x, x, step, seed_tensor(3), training=True)[0]
            .numpy()
            .ravel()
            for step in range(5)
        ]
        flat = np.concatenate(seen)
        # 10 draws from 5 examples: each example exactly twice, batches of 2
        assert sorted(flat.tolist()) == sorted(list(range(5)) * 2)
        assert all(len(b) == 2 for b in seen)
        # evaluation has no mini-batches configured: the whole support set
        assert (
            learner.inner_batch(x, x, 0, seed_tensor(3), training=False)[0].shape[0]
            == 5
        )


def test_each_evaluated_task_has_its_own_mini_batch_order():
    """At evaluation and serving the order is seeded by the task's content:
    two tasks get different orders, one task the same order every time, and
    adapt() runs the inner loop with that order."""
    with floatx("float64"):
        learner = Reptile(
            linear_model(),
            keras.optimizers.SGD(1.0),
            inner_lr=0.1,
            eval_inner_steps=3,
            eval_inner_batch_size=2,
            problem="regression",
        )
    rng = np.random.default_rng(0)
    tasks = [tf.constant(rng.normal(size=(10, 1))) for _ in range(6)]
    orders = []
    for x in tasks:
        seed = learner.adaptation_seed(x)
        np.testing.assert_array_equal(seed, learner.adaptation_seed(tf.identity(x)))
        batch_x = learner.inner_batch(x, x, 0, seed, training=False)[0].numpy()
        orders.append(
            tuple(np.searchsorted(np.sort(x.numpy().ravel()), batch_x.ravel()))
        )
    assert len(set(orders)) > 1, orders
    # adapt() uses the content seed: the same as the inner loop run by hand with it.
    x = tasks[0]
    y = 2.0 * x
    expected = learner.inner_loop(
        learner.parameters(), x, y, 3, False, learner.content_seed(x), training=False
    )
    for a, b in zip(learner.adapt(x, y), expected):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    other = learner.inner_loop(
        learner.parameters(), x, y, 3, False, learner.default_seed(), training=False
    )
    assert not np.allclose(learner.adapt(x, y)[0], other[0])
    # The seed under XLA equals the eager one.
    compiled = tf.function(learner.content_seed, jit_compile=True)
    np.testing.assert_array_equal(compiled(x), learner.content_seed(x))
