"""Proto-MAML: the prototype head by hand, its meta-gradient against central
finite differences in float64, adaptation as MAML's inner loop from that
head, and a short training run (resume, export and serving:
``test_conformance.py``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    batch,
    check_directional_derivatives,
    classification_task,
    first_order_through_start,
    floatx,
    query_loss_after_inner_loop,
    random_directions,
    seed_tensor,
    tiny_conv,
    tiny_mlp,
)
from tfmeta.algorithms import ProtoMAML


def mlp_task(rng, n_way=3, k_shot=2, q_query=2, dim=4):
    """float64 vectors ``[n_way * k, dim]`` and labels (support, then query)."""
    return classification_task(rng, n_way, k_shot, q_query, shape=(dim,))


def test_initial_head_is_the_prototype_classifier():
    """W_k = 2 c_k, b_k = -||c_k||^2 with c_k the mean hidden ReLU features
    of class k, computed in numpy; the body is theta's."""
    with floatx("float64"):
        model = tiny_mlp(seed=1, hidden=(5,), output_dim=3, input_dim=4)
        learner = ProtoMAML(model, keras.optimizers.SGD(0.0), inner_lr=0.1)
    support_x, support_y, query_x, _ = mlp_task(np.random.default_rng(1))
    params = learner.parameters()
    start = learner.initial_weights(params, support_x, support_y)
    w1, b1 = params[0].numpy(), params[1].numpy()
    z = np.maximum(support_x.numpy() @ w1 + b1, 0.0)
    c = np.stack([z[support_y.numpy() == k].mean(0) for k in range(3)])
    np.testing.assert_allclose(start[2].numpy(), 2.0 * c.T, rtol=1e-12)
    np.testing.assert_allclose(start[3].numpy(), -(c**2).sum(1), rtol=1e-12)
    for body in (0, 1):
        assert start[body] is params[body]
    # logits = ||z||^2 - ||z - c_k||^2: the squared-Euclidean prototype classifier
    zq = np.maximum(query_x.numpy() @ w1 + b1, 0.0)
    distances = ((zq[:, None, :] - c[None]) ** 2).sum(-1)
    logits = learner.forward(start, query_x).numpy()
    np.testing.assert_allclose(logits, (zq**2).sum(1, keepdims=True) - distances)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("transductive", [True, False])
def test_meta_gradient_matches_finite_differences(steps, transductive):
    """Second order through the inner steps and the prototypes (conv net with
    batch norm); the head's own variables get zero meta-gradient."""
    with floatx("float64"):
        learner = ProtoMAML(
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


def test_first_order_keeps_the_gradient_through_the_prototypes():
    """fo-Proto-MAML: d theta'/d start = I, then the prototypes' Jacobian."""
    with floatx("float64"):
        learner = ProtoMAML(
            tiny_conv(seed=4),
            keras.optimizers.SGD(0.0),
            inner_lr=0.5,
            inner_steps=2,
            first_order=True,
        )
    task = classification_task(np.random.default_rng(4))
    expected = first_order_through_start(learner, task)
    got = learner.meta_step.task(*task, seed_tensor()).meta_gradient
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("transductive", [True, False])
def test_adapt_and_predict_are_maml_steps_from_the_prototype_head(transductive):
    """theta' = SGD by hand from the head made of the support features of a
    Keras sub-model (not the learner's stateless path); Gradient Agreement's
    update vector is the inner loop's move start - theta'."""
    steps, alpha = 3, 0.4
    with floatx("float64"):
        model = tiny_conv(seed=5)
        learner = ProtoMAML(
            model,
            keras.optimizers.SGD(0.0),
            inner_lr=alpha,
            inner_steps=steps,
            eval_inner_steps=steps,
            transductive=transductive,
            task_weighting="gradient_agreement",
        )
    task = classification_task(np.random.default_rng(5))
    support_x, support_y, query_x, _ = task
    features = keras.Model(model.inputs, model.get_layer("mean").output)
    z = features(support_x, training=True).numpy()
    c = np.stack([z[support_y.numpy() == k].mean(0) for k in range(3)])
    start = learner.parameters()
    start[-2:] = [tf.constant(2.0 * c.T), tf.constant(-(c**2).sum(1))]
    fast = list(start)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = learner.loss(learner.forward(fast, support_x), support_y)
        fast = [w - alpha * g for w, g in zip(fast, tape.gradient(loss, fast))]
    adapted = learner.adapt(support_x, support_y)
    for got, want in zip(adapted, fast):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        learner.predict(adapted, query_x, support_x).numpy(),
        learner.predict(fast, query_x, support_x).numpy(),
        rtol=1e-9,
    )
    update = learner.meta_step.task(*task, seed_tensor()).update
    for u, s, f in zip(update, start, fast):
        np.testing.assert_allclose(u.numpy(), (s - f).numpy(), rtol=1e-8, atol=1e-12)


def separable_task(rng, centers, n_way=3, k_shot=2, q_query=5):
    """Classes at ``centers`` in 2 of 10 dimensions, noise of std 2 in the
    other 8: a random body's prototypes are dominated by the noise."""

    def draw(count):
        signal = np.repeat(centers, count, axis=0) + 0.1 * rng.normal(
            size=(n_way * count, 2)
        )
        noise = 2.0 * rng.normal(size=(n_way * count, 8))
        labels = np.repeat(np.arange(n_way), count).astype(np.int32)
        return np.concatenate([signal, noise], 1).astype(np.float32), labels

    return (*draw(k_shot), *draw(q_query))


def test_short_training_run_raises_accuracy():
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    pool = np.stack([np.cos(angles), np.sin(angles)], 1)

    def tasks(rng, count):
        return batch(
            *[
                separable_task(rng, pool[rng.choice(12, 3, replace=False)])
                for _ in range(count)
            ]
        )

    model = tiny_mlp(seed=0, hidden=(16,), output_dim=3, input_dim=10)
    learner = ProtoMAML(
        model, keras.optimizers.Adam(1e-2), inner_lr=0.1, eval_inner_steps=1
    )
    test = tasks(np.random.default_rng(100), 20)
    before = float(tf.reduce_mean(learner.meta_eval_step(test)["accuracy"]))
    rng = np.random.default_rng(0)
    for _ in range(80):
        learner.meta_train_step(tasks(rng, 4))
    after = float(tf.reduce_mean(learner.meta_eval_step(test)["accuracy"]))
    assert before < 0.6 and after > 0.8, (before, after)
