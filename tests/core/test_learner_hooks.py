"""What the core carries for the next algorithms, checked against central
finite differences in float64: a per-task start of the inner loop whose
gradient reaches theta, and per-step parameters owned by the learner."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    check_directional_derivatives,
    first_order_through_start,
    floatx,
    query_loss_after_inner_loop,
    random_directions,
    regression_task,
    seed_tensor,
    tiny_mlp,
)
from tfmeta.algorithms import MAML


class ScaledHead(MAML):
    """Each task starts with the last bias replaced by b * (1 + mean(support_y)):
    a per-task start that is a function of theta and of the support set."""

    name = "scaled_head"

    def initial_weights(self, params, support_x, support_y):
        start = list(params)
        start[-1] = params[-1] * (1.0 + tf.reduce_mean(support_y))
        return start


class PerStepOffsets(MAML):
    """A learned output offset per inner step (up to 3), owned by the learner:
    inner step s adds offsets[s] to the model's outputs."""

    name = "per_step_offsets"

    def __init__(self, model, optimizer, steps, **kwargs):
        self.offsets = tf.Variable(
            np.linspace(0.3, -0.2, 3), dtype=tf.float64, name="offsets"
        )
        super().__init__(
            model, optimizer, inner_steps=steps, own_variables=[self.offsets], **kwargs
        )

    def step_forward(self, params, x, step, training=True):
        offset = tf.gather(params[-1], step)  # params[-1] is theta's copy of offsets
        return self.forward(params, x) + offset


def check_against_finite_differences(learner, task, steps, epsilon=1e-6):
    gradient = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    check_directional_derivatives(
        learner,
        gradient,
        lambda: query_loss_after_inner_loop(learner, task, steps),
        random_directions(learner, 3),
        epsilon=epsilon,
    )
    return gradient


@pytest.mark.parametrize("first_order", [False, True])
def test_a_per_task_start_passes_its_gradient_to_theta(first_order):
    with floatx("float64"):
        learner = ScaledHead(
            tiny_mlp(seed=4),
            keras.optimizers.SGD(0.0),
            inner_lr=0.05,
            inner_steps=2,
            problem="regression",
            first_order=first_order,
        )
    task = regression_task(np.random.default_rng(2))
    if first_order:  # FOMAML through the start: d theta'/d start = I
        expected = first_order_through_start(learner, task)
        got = learner.meta_step.task(*task, seed_tensor()).meta_gradient
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)
        assert float(tf.reduce_sum(tf.abs(got[-1]))) > 0.0
    else:
        check_against_finite_differences(learner, task, 2)


@pytest.mark.parametrize("unroll", [True, False])
def test_per_step_parameters_are_the_ones_each_step_uses(unroll):
    with floatx("float64"):
        learner = PerStepOffsets(
            tiny_mlp(seed=5),
            keras.optimizers.SGD(0.0),
            steps=3,
            inner_lr=0.05,
            problem="regression",
            unroll_inner_loop=unroll,
        )
    task = regression_task(np.random.default_rng(3))
    assert learner.variables[-1] is learner.offsets
    gradient = check_against_finite_differences(learner, task, 3)
    assert np.all(np.abs(gradient[-1].numpy()) > 0.0)  # every step's offset is used
    # With one inner step, only offsets[0] is used.
    with floatx("float64"):
        one_step = PerStepOffsets(
            tiny_mlp(seed=5),
            keras.optimizers.SGD(0.0),
            steps=1,
            inner_lr=0.05,
            problem="regression",
            unroll_inner_loop=unroll,
        )
    one = one_step.meta_step.task(*task, seed_tensor()).meta_gradient[-1].numpy()
    assert one[0] != 0.0 and np.all(one[1:] == 0.0)
