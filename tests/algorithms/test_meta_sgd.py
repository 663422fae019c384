"""Meta-SGD: alpha's shapes and initialization, the inner step by hand, the
meta-gradient in theta and alpha against central finite differences in
float64, alpha in checkpoints, the oneDNN refusal, and Gradient Agreement
(the export: ``test_conformance.py``)."""

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
from tfmeta.algorithms import MetaSGD
from tfmeta.training import Trainer


def conv_learner(model_seed=1, **kwargs):
    kwargs.setdefault("adapt_variables", "all")  # float64: no oneDNN rewrite
    with floatx("float64"):
        return MetaSGD(
            tiny_conv(seed=model_seed),
            keras.optimizers.SGD(0.0),
            inner_lr=0.3,
            **kwargs,
        )


def test_alpha_has_the_shapes_of_theta_and_the_papers_initialization():
    learner = conv_learner(seed=2)  # alpha is drawn from the learner's seed
    count = len(learner.model.trainable_variables)
    assert learner.variables[count:] == learner.alphas
    for alpha, variable in zip(learner.alphas, learner.model.trainable_variables):
        assert alpha.shape == variable.shape and alpha.dtype == tf.float64
    values = np.concatenate([a.numpy().ravel() for a in learner.alphas])
    assert values.min() >= 0.005 and values.max() <= 0.1 and values.std() > 0.02
    same, other = conv_learner(model_seed=5, seed=2), conv_learner(seed=3)
    np.testing.assert_array_equal(same.alphas[0].numpy(), learner.alphas[0].numpy())
    assert not np.allclose(other.alphas[0].numpy(), learner.alphas[0].numpy())
    constant = conv_learner(meta_sgd_init="constant")
    for alpha in constant.alphas:
        np.testing.assert_array_equal(alpha.numpy(), 0.3)
    head = conv_learner(adapt_variables="head")
    assert [a.shape for a in head.alphas] == [
        v.shape for v in head.model.layers[-1].trainable_variables
    ]


def test_one_inner_step_is_theta_minus_alpha_times_gradient():
    learner = conv_learner(model_seed=3, eval_inner_steps=1)
    support_x, support_y, _, _ = classification_task(np.random.default_rng(3))
    theta = learner.parameters()
    with tf.GradientTape() as tape:
        tape.watch(theta)
        loss = learner.loss(learner.forward(theta, support_x), support_y)
    grads = tape.gradient(loss, theta[: len(learner.alphas)])
    adapted = learner.adapt(support_x, support_y)
    for k, (t, alpha, g) in enumerate(zip(theta, learner.alphas, grads)):
        expected = t.numpy() - alpha.numpy() * g.numpy()
        np.testing.assert_allclose(adapted[k].numpy(), expected, rtol=1e-12, atol=1e-14)
    for t, a in zip(theta[len(learner.alphas) :], adapted[len(learner.alphas) :]):
        np.testing.assert_array_equal(
            a.numpy(), t.numpy()
        )  # alpha itself does not adapt


def objective(learner, task, steps):
    support_x, support_y, query_x, query_y = task
    fast = learner.inner_loop(
        learner.parameters(), support_x, support_y, steps, False, seed_tensor()
    )
    return float(
        learner.loss(learner.predict(fast, query_x, support_x, steps), query_y)
    )


def check_finite_differences(learner, task, steps, epsilon):
    """Directional derivatives along random directions of (theta, alpha), and
    of alpha alone."""
    gradient = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    count = len(learner.model.trainable_variables)
    directions = random_directions(learner, 3)
    directions[-1][:count] = [np.zeros_like(d) for d in directions[-1][:count]]
    check_directional_derivatives(
        learner,
        gradient,
        lambda: objective(learner, task, steps),
        directions,
        epsilon=epsilon,
        rel=1e-5,
        abs=1e-10,
    )
    zero = zero_step_sizes(learner.model)
    for alpha, g in zip(learner.alphas, gradient[count:]):
        assert (float(tf.norm(g)) > 0.0) != (alpha.name.split(":")[0] in zero)
    return gradient


@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_in_theta_and_alpha_matches_finite_differences(steps):
    # 2 steps: the backward pass recomputes each step's activations.
    learner = conv_learner(model_seed=4, inner_steps=steps, recompute=steps == 2)
    # epsilon 1e-5 crosses a ReLU kink of this net at 2 steps (error 1e-4)
    check_finite_differences(
        learner, classification_task(np.random.default_rng(4)), steps, 1e-6
    )
    with floatx("float64"):
        regressor = MetaSGD(
            tiny_mlp(seed=4),
            keras.optimizers.SGD(0.0),
            inner_lr=0.05,
            inner_steps=steps,
            problem="regression",
            unroll_inner_loop=steps == 1,  # 2 steps: a differentiated while loop
        )
    check_finite_differences(
        regressor, regression_task(np.random.default_rng(4)), steps, 1e-6
    )


def test_first_order_keeps_alphas_gradient():
    """First order: d theta'/d theta = I and dL/d alpha = -grad_support * grad_query(theta')."""
    learner = conv_learner(model_seed=5, first_order=True)
    task = classification_task(np.random.default_rng(5))
    support_x, support_y, query_x, query_y = task
    theta = learner.parameters()
    count = len(learner.alphas)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        loss = learner.loss(learner.forward(theta, support_x), support_y)
    support_grad = tape.gradient(loss, theta[:count])
    fast = [t - a * g for t, a, g in zip(theta, learner.alphas, support_grad)]
    with tf.GradientTape() as tape:
        tape.watch(fast)
        loss = learner.loss(learner.predict(fast, query_x, support_x, 1), query_y)
    query_grad = tape.gradient(loss, fast)
    got = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    for k in range(count):
        np.testing.assert_allclose(
            got[k].numpy(), query_grad[k].numpy(), rtol=1e-9, atol=1e-13
        )
        expected = -support_grad[k].numpy() * query_grad[k].numpy()
        np.testing.assert_allclose(
            got[count + k].numpy(), expected, rtol=1e-9, atol=1e-13
        )


def test_gradient_agreement_update_is_alpha_times_gradient():
    """theta - theta'_i: alpha * grad for theta, zero for alpha (it does not adapt)."""
    learner = conv_learner(model_seed=6, task_weighting="gradient_agreement")
    task = classification_task(np.random.default_rng(6))
    theta = learner.parameters()
    count = len(learner.alphas)
    with tf.GradientTape() as tape:
        tape.watch(theta)
        loss = learner.loss(learner.forward(theta, task[0]), task[1])
    grads = tape.gradient(loss, theta[:count])
    update = learner.meta_step.task(*task, seed_tensor()).update
    assert len(update) == 2 * count
    for u, a, g in zip(update, learner.alphas, grads):
        np.testing.assert_allclose(u.numpy(), (a * g).numpy(), rtol=1e-9, atol=1e-14)
    assert all(float(tf.reduce_max(tf.abs(u))) == 0.0 for u in update[count:])
    rng = np.random.default_rng(7)
    tasks = [classification_task(rng) for _ in range(3)]
    out = learner.meta_train_step(tuple(tf.stack(parts) for parts in zip(*tasks)))
    weights = out["task_weights"].numpy()
    assert np.all(np.isfinite(weights)) and np.abs(weights - 1 / 3).max() > 1e-4


def _episodes(start_step=0):
    rng = np.random.default_rng(start_step)
    while True:
        x = rng.uniform(-1, 1, size=(2, 6, 1)).astype(np.float32)
        yield (x[:, :3], np.sin(x[:, :3]), x[:, 3:], np.sin(x[:, 3:]))


def test_batch_norm_adapting_under_onednn_is_refused_in_float32():
    from tfmeta import runtime

    if runtime.onednn_enabled():
        with pytest.raises(ValueError, match="adapt_variables=all_but_norm"):
            MetaSGD(
                tiny_conv(),
                keras.optimizers.SGD(0.0),
                inner_lr=0.1,
                adapt_variables="all",
            )
    else:  # TensorFlow's own kernels: nothing to refuse
        learner = MetaSGD(
            tiny_conv(), keras.optimizers.SGD(0.0), inner_lr=0.1, adapt_variables="all"
        )
        assert learner.adapt_variables == "all"
    learner = MetaSGD(tiny_conv(), keras.optimizers.SGD(0.0), inner_lr=0.1)  # default
    assert learner.adapt_variables == "all_but_norm"


def test_alphas_are_checkpointed_and_resumed(tmp_path):
    def make():
        return MetaSGD(
            tiny_mlp(seed=1),
            keras.optimizers.Adam(0.01),
            inner_lr=0.1,
            problem="regression",
        )

    learner = make()
    initial = [a.numpy().copy() for a in learner.alphas]
    Trainer(learner, str(tmp_path), _episodes, checkpoint_every=1).train(2)
    trained = [a.numpy().copy() for a in learner.alphas]
    assert all(np.abs(a - b).max() > 1e-4 for a, b in zip(trained, initial))
    fresh = make()
    assert Trainer(fresh, str(tmp_path), _episodes).resume() == 2
    for got, want in zip(fresh.alphas, trained):
        np.testing.assert_array_equal(got.numpy(), want)
