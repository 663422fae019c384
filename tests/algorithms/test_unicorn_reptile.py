"""Reptile from the shared zero head start: its outer update against a hand
written two-layer network (resume, export and serving:
``test_conformance.py``; the user's path: ``test_user_path.py``)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import batch, classification_task, floatx, tiny_mlp
from tfmeta.algorithms import UnicornReptile


def sgd_from_zero_head(weights, x, y, lr, steps):
    """``steps`` SGD steps on the mean softmax cross-entropy of
    relu(x W0 + b0) W1 + b1, from the body ``weights[:2]`` and W1 = 0, b1 = 0."""
    w0, b0, w1, b1 = [tf.Variable(w) for w in weights]
    w1.assign(tf.zeros_like(w1))
    b1.assign(tf.zeros_like(b1))
    for _ in range(steps):
        with tf.GradientTape() as tape:
            logits = tf.nn.relu(x @ w0 + b0) @ w1 + b1
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)
            )
        for v, g in zip((w0, b0, w1, b1), tape.gradient(loss, [w0, b0, w1, b1])):
            v.assign_sub(lr * g)
    return [v.numpy() for v in (w0, b0, w1, b1)]


def test_the_body_moves_toward_each_tasks_adapted_body_and_the_head_stays():
    """phi <- phi + epsilon * mean_i (phi_tilde_i - phi) on the body, where
    phi_tilde_i is reached from the zero head; theta's own head, never used,
    gets a zero pseudo-gradient. Two inner steps: the first moves only the
    head (the body's gradient is zero at a zero head), the second the body."""
    epsilon, lr = 0.3, 0.5
    with floatx("float64"):
        model = tiny_mlp(seed=2, hidden=(5,), output_dim=3, input_dim=4)
        learner = UnicornReptile(
            model, keras.optimizers.SGD(epsilon), inner_lr=lr, inner_steps=2
        )
        rng = np.random.default_rng(2)
        tasks = [classification_task(rng, 3, 2, 2, shape=(4,)) for _ in range(2)]
        phi = [v.numpy() for v in model.trainable_variables]
        tildes = [sgd_from_zero_head(phi, t[0], t[1], lr, 2) for t in tasks]
        learner.meta_train_step(batch(*tasks))
    got = [v.numpy() for v in model.trainable_variables]
    for i in (0, 1):
        moved = np.mean([t[i] for t in tildes], axis=0) - phi[i]
        assert np.abs(moved).max() > 1e-3  # the second step moved the body
        np.testing.assert_allclose(got[i], phi[i] + epsilon * moved, rtol=1e-10)
    for i in (2, 3):
        np.testing.assert_array_equal(got[i], phi[i])
    assert learner.describe()["initial_head"].startswith("zero")
    assert set(learner.serving_functions()) >= {"adapt_and_predict"}
    assert "predict" not in learner.serving_functions()
