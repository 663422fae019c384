"""MAML++: its meta-gradient against central finite differences in float64
with each part on (multi-step loss, LSLR, per-step batch norm), the
importance vector against its closed form, derivative-order annealing against
first- and second-order MAML++, and the per-step parameters each step uses."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    check_directional_derivatives,
    classification_task,
    floatx,
    random_directions,
    regression_task,
    seed_tensor,
    tiny_conv,
    tiny_mlp,
    zero_step_sizes,
)
from tfmeta.algorithms import MAMLPlusPlus
from tfmeta.algorithms.maml_plus_plus import importance_vector
from tfmeta.core.algorithm import run_steps
from tfmeta.core.inner_loop import SupportTask

STEPS = 2


def build(model=None, **kwargs):
    with floatx("float64"):
        model = model or tiny_conv(n_way=3, seed=1)
        arguments = {
            "inner_lr": 0.1,
            "inner_steps": STEPS,
            "multi_step_loss_steps": 10,
            "adapt_variables": "all_but_norm",
        }
        arguments.update(kwargs)
        return MAMLPlusPlus(model, keras.optimizers.SGD(0.0), **arguments)


def objective(learner, task) -> float:
    """sum_s v_s L(theta'_s; query), eagerly, from the current variables."""
    support_x, support_y, query_x, query_y = task
    steps = learner.inner_steps
    if learner.multi_step_loss:
        weights = learner.step_weights().numpy()
    else:
        weights = np.eye(steps)[-1]
    trajectory = learner.inner.run(
        learner.parameters(),
        SupportTask(support_x, support_y, seed_tensor(), True),
        steps,
        differentiable=False,
        trajectory=True,
    )
    total = 0.0
    for step, (weight, fast) in enumerate(zip(weights, trajectory), start=1):
        outputs = learner.predict(fast, query_x, support_x, step)
        total += weight * float(learner.loss(outputs, query_y))
    return total


def check_finite_differences(learner, task):
    gradient = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    check_directional_derivatives(
        learner,
        gradient,
        lambda: objective(learner, task),
        random_directions(learner, 3),
    )
    return gradient


PARTS = {
    "all": {},
    "multi_step_loss": {"learned_step_sizes": False, "per_step_batch_norm": False},
    "lslr": {"multi_step_loss": False, "per_step_batch_norm": False},
    "per_step_batch_norm": {"multi_step_loss": False, "learned_step_sizes": False},
}


@pytest.mark.parametrize("transductive", [True, False])
@pytest.mark.parametrize("part", sorted(PARTS))
def test_meta_gradient_matches_finite_differences(part, transductive):
    learner = build(transductive=transductive, **PARTS[part])
    # Mid-annealing, so that the importance vector is not uniform.
    learner.outer_optimizer.iterations.assign(4)
    task = classification_task(np.random.default_rng(0))
    gradient = check_finite_differences(learner, task)
    own = gradient[len(learner.model.trainable_variables) :]
    assert len(own) == len(learner.own_variables)
    zero = zero_step_sizes(learner.model)
    for variable, g in zip(learner.own_variables, own):
        moved = float(tf.reduce_max(tf.abs(g))) > 0.0
        assert moved != (variable.name.split(":")[0] in zero), variable.name


def test_second_order_through_learned_rates_on_the_sinusoid_mlp():
    with floatx("float64"):
        model = tiny_mlp(seed=3, hidden=(5, 5))
    learner = build(model, problem="regression", inner_lr=0.05, inner_steps=3)
    learner.outer_optimizer.iterations.assign(2)
    check_finite_differences(learner, regression_task(np.random.default_rng(1)))


def test_importance_vector_closed_form():
    five = importance_vector(5, tf.constant(0.0), tf.float64).numpy()
    np.testing.assert_allclose(five, [0.2] * 5)
    half = importance_vector(5, tf.constant(0.5), tf.float64).numpy()
    np.testing.assert_allclose(half, [0.1, 0.1, 0.1, 0.1, 0.6])
    late = importance_vector(5, tf.constant(0.99), tf.float64).numpy()
    np.testing.assert_allclose(late[:4], [0.006] * 4)  # the floor 0.03 / S
    np.testing.assert_allclose(late[4], 0.976)  # 1 - 4 * 0.006
    np.testing.assert_allclose(
        importance_vector(5, tf.constant(1.0), tf.float64).numpy(), [0, 0, 0, 0, 1]
    )
    np.testing.assert_allclose(
        importance_vector(1, tf.constant(0.3), tf.float64).numpy(), [1.0]
    )


def test_derivative_order_annealing_is_first_order_then_second():
    task = classification_task(np.random.default_rng(3))
    annealed = build(first_order_steps_of_run=3)
    first = build(first_order=True)
    second = build()

    def gradient(learner, step):
        learner.outer_optimizer.iterations.assign(step)
        result = learner.meta_step.task(*task, seed_tensor())
        return [g.numpy() for g in result.meta_gradient]

    for step, reference in ((0, first), (2, first), (3, second), (7, second)):
        for a, b in zip(gradient(annealed, step), gradient(reference, step)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # First and second order differ, and the first-order phase still trains
    # the learned step sizes (theta' = theta - alpha * g, g held constant).
    difference = max(
        np.abs(a - b).max() for a, b in zip(gradient(first, 0), gradient(second, 0))
    )
    assert difference > 1e-6
    rates = gradient(first, 0)[annealed.rate_offset :]
    zero = zero_step_sizes(annealed.model)
    for variable, rate in zip(annealed.step_sizes, rates):
        assert (np.abs(rate).max() > 0.0) != (variable.name.split(":")[0] in zero)


def test_each_step_uses_its_own_parameters():
    learner = build(multi_step_loss=False)
    for (model_index, own_index), variable in zip(
        learner.norm_slots, learner.own_variables
    ):
        variable.assign(
            variable + tf.reshape(tf.range(STEPS, dtype=tf.float64), [-1, 1])
        )
    params = learner.parameters()
    for step in range(STEPS + 2):  # past the trained steps: the last one's
        slot = min(step, STEPS - 1)
        chosen = learner.parameters_at_step(params, step)
        for model_index, own_index in learner.norm_slots:
            np.testing.assert_array_equal(chosen[model_index], params[own_index][slot])
        rates = learner.step_learning_rates(params, tf.constant(step))
        assert len(rates) == len(learner.inner.adapted)
    # One inner step: theta' = theta - alpha_{l,0} * grad, a rate per tensor.
    for index, rate in enumerate(learner.step_sizes):
        rate.assign([0.01 * (index + 1), 0.5])
    support_x, support_y, _, _ = classification_task(np.random.default_rng(4))
    start = learner.parameters()
    with tf.GradientTape() as tape:
        tape.watch(start)
        loss = learner.loss(learner.step_forward(start, support_x, 0), support_y)
    grads = tape.gradient(loss, start)
    fast = learner.inner_loop(start, support_x, support_y, 1, differentiable=False)
    for index, (tensor, rate) in enumerate(
        zip(learner.inner.adapted, learner.step_sizes)
    ):
        expected = start[tensor] - 0.01 * (index + 1) * grads[tensor]
        np.testing.assert_allclose(fast[tensor], expected, rtol=1e-12)
    # Normalization layers do not adapt; the model's own scale and offset are
    # replaced by the per-step ones, so their meta-gradient is zero.
    task = classification_task(np.random.default_rng(5))
    gradient = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    for model_index, _ in learner.norm_slots:
        np.testing.assert_array_equal(fast[model_index], start[model_index])
        assert float(tf.reduce_max(tf.abs(gradient[model_index]))) == 0.0


@pytest.mark.parametrize(
    "value, expected", [(0.1, 100), (0.0, 0), (250, 250), (250.0, 250), (1, 1)]
)
def test_schedules_in_steps_or_fractions(value, expected):
    assert run_steps("multi_step_loss_steps", value, 1000) == expected


@pytest.mark.parametrize("value", [-1, 2.5, float("nan"), "x", True])
def test_bad_schedules_are_refused(value):
    with pytest.raises(ValueError, match="multi_step_loss_steps"):
        run_steps("multi_step_loss_steps", value, 1000)


def first_layer_moments(learner, weights, x):
    """The first batch-norm layer's input moments under ``weights``, by hand
    (tiny_conv: a 3x3 convolution, then batch norm)."""
    kernel, bias = weights[0], weights[1]
    stride = learner.model.layers[0].strides
    padding = learner.model.layers[0].padding.upper()
    z = tf.nn.conv2d(x, kernel, strides=stride, padding=padding) + bias
    return z.numpy().mean(axis=(0, 1, 2)), z.numpy().var(axis=(0, 1, 2))


def test_running_statistics_move_towards_the_support_statistics():
    from tfmeta.models.batch_norm import collect_statistics

    learner = build(
        running_statistics=True, statistics_momentum=0.25, multi_step_loss=False
    )
    assert len(learner.state_variables) == 2 * len(learner.per_step.layers) == 4
    rng = np.random.default_rng(8)
    tasks = [classification_task(rng) for _ in range(2)]
    episode = tuple(tf.stack(parts) for parts in zip(*tasks))
    params = learner.parameters()
    learner.meta_train_step(episode)  # SGD(0): theta stays, the state moves
    expected_means = np.zeros((len(learner.per_step.layers), STEPS, 4))
    expected_variances = np.zeros_like(expected_means)
    for support_x, support_y, _, _ in tasks:
        task = SupportTask(support_x, support_y, seed_tensor(), True)
        after = learner.inner.run(params, task, STEPS - 1, False, trajectory=True)
        for step, weights in enumerate([params, *after]):
            hand_mean, hand_variance = first_layer_moments(learner, weights, support_x)
            np.testing.assert_allclose(
                hand_mean,
                collect(learner, weights, support_x, step, collect_statistics)[0][0],
            )
            moments = collect(learner, weights, support_x, step, collect_statistics)
            for index, (mean, variance) in enumerate(moments):
                expected_means[index, step] += mean / len(tasks)
                expected_variances[index, step] += variance / len(tasks)
            np.testing.assert_allclose(moments[0][1], hand_variance, rtol=1e-10)
    for index in range(len(learner.per_step.layers)):
        np.testing.assert_allclose(
            learner.per_step.running_means[index].numpy(),
            0.25 * expected_means[index],
            rtol=1e-9,
        )
        np.testing.assert_allclose(
            learner.per_step.running_variances[index].numpy(),
            0.75 + 0.25 * expected_variances[index],
            rtol=1e-9,
        )


def collect(learner, weights, x, step, collect_statistics):
    with collect_statistics() as seen:
        learner.step_forward(weights, x, step, True)
    return [seen[layer.name] for layer in learner.per_step.layers]


def test_evaluation_normalizes_with_the_running_statistics():
    """With the running statistics set to the support set's own, the support
    forward and an unadapted prediction equal the support-statistics
    (non-transductive) learner's; adapting takes the statistics as constants
    (no gradient through them); a query's answer depends on no other example."""
    from tfmeta.models.batch_norm import collect_statistics

    running = build(running_statistics=True, inner_steps=1, transductive=False)
    support = build(inner_steps=1, transductive=False)
    for a, b in zip(running.variables, support.variables):
        a.assign(b)
    support_x, support_y, query_x, _ = classification_task(np.random.default_rng(9))
    moments = collect(running, running.parameters(), support_x, 0, collect_statistics)
    for index, (mean, variance) in enumerate(moments):
        running.per_step.running_means[index].assign(mean[None])
        running.per_step.running_variances[index].assign(variance[None])
    params = running.parameters()
    np.testing.assert_allclose(
        running.step_forward(params, support_x, 0, training=False),
        support.step_forward(params, support_x, 0, training=False),
        rtol=1e-10,
    )
    with tf.GradientTape() as tape:
        tape.watch(params)
        outputs = running.step_forward(params, support_x, 0, training=False)
        loss = running.loss(outputs, support_y)
    grads = tape.gradient(loss, params)
    adapted = running.adapt(support_x, support_y)
    batch_adapted = support.adapt(support_x, support_y)
    for index in running.inner.adapted:
        np.testing.assert_allclose(
            adapted[index], params[index] - 0.1 * grads[index], rtol=1e-10, atol=1e-12
        )
    assert not np.allclose(adapted[0], batch_adapted[0], rtol=1e-6)
    np.testing.assert_allclose(
        running.predict(params, query_x, None, 0),
        support.predict(params, query_x, support_x, 0),
        rtol=1e-10,
    )
    # One query alone, no support set: the same answer as in its batch.
    fast = running.adapt(support_x, support_y)
    together = running.predict(fast, query_x)
    np.testing.assert_allclose(
        running.predict(fast, query_x[:1]), together[:1], rtol=1e-12
    )
    # Meta-training's query still uses batch statistics.
    assert not np.allclose(
        running.predict(fast, query_x, support_x, training=True), together
    )
    assert running.describe()["running_statistics"] is True


def test_bad_statistics_momentum_is_refused():
    with pytest.raises(ValueError, match="statistics_momentum"):
        build(running_statistics=True, statistics_momentum=0.0)
