"""Gradient Agreement weights against hand-computed values, and inside a meta-step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import batch, classification_task, floatx, seed_tensor, tiny_conv
from tfmeta.algorithms import ALGORITHMS
from tfmeta.core.weighting import (
    gradient_agreement_weights,
    gram_matrix,
    task_weights,
)


def weights_of(vectors, split=True):
    """Each vector as two 'variables' (a split), so the Gram matrix sums over variables."""
    updates = []
    for v in vectors:
        v = tf.constant(np.asarray(v, np.float64))
        updates.append([v[:1], v[1:]] if split else [v])
    return task_weights("gradient_agreement", updates).numpy()


def test_identical_updates_give_uniform_weights():
    np.testing.assert_allclose(weights_of([[1.0, 2.0, 3.0]] * 4), np.full(4, 0.25))


def test_hand_computed_weights_with_an_opposed_task():
    g = [[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]
    # G = [[1, 1, -1], [1, 2, -1], [-1, -1, 1]]; row sums 1, 2, -1; sum |.| = 4
    np.testing.assert_allclose(weights_of(g), [0.25, 0.5, -0.25])
    assert weights_of(g)[2] < 0


def test_weights_sum_to_one_when_all_agreements_are_positive():
    rng = np.random.default_rng(0)
    g = np.abs(rng.normal(size=(5, 7)))  # positive entries: all dot products positive
    w = weights_of(g)
    assert np.all(w > 0)
    assert w.sum() == pytest.approx(1.0)


def test_weights_are_invariant_to_positive_scaling():
    g = np.random.default_rng(1).normal(size=(6, 9))
    np.testing.assert_allclose(weights_of(g), weights_of(37.5 * g), rtol=1e-12)


def test_two_exactly_opposed_tasks_fall_back_to_the_mean():
    w = weights_of([[1.0, -2.0, 0.5], [-1.0, 2.0, -0.5]])
    np.testing.assert_allclose(w, [0.5, 0.5])


def test_all_zero_updates_give_uniform_weights_not_nan():
    w = weights_of(np.zeros((3, 4)))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w, np.full(3, 1 / 3))


def test_gram_matrix_sums_over_variables():
    a = [tf.constant([1.0, 2.0]), tf.constant([[3.0]])]
    b = [tf.constant([0.0, -1.0]), tf.constant([[2.0]])]
    np.testing.assert_allclose(gram_matrix([a, b]).numpy(), [[14.0, 4.0], [4.0, 5.0]])
    np.testing.assert_allclose(
        gradient_agreement_weights(tf.constant([[14.0, 4.0], [4.0, 5.0]])).numpy(),
        [18 / 27, 9 / 27],
    )


@pytest.mark.parametrize("name", ["maml", "fomaml", "reptile"])
def test_meta_step_uses_the_weighted_sum_of_task_gradients(name):
    with floatx("float64"):
        model = tiny_conv(seed=11)
        learner = ALGORITHMS[name].learner(
            model,
            keras.optimizers.SGD(1.0),
            inner_lr=0.3,
            inner_steps=2,
            task_weighting="gradient_agreement",
        )
        rng = np.random.default_rng(11)
        tasks = [classification_task(rng) for _ in range(4)]
        results = [
            learner.meta_step.task(*task, seed_tensor(i))
            for i, task in enumerate(tasks)
        ]
        # by hand: flatten the updates, dot products, weights, weighted sum
        flat = np.stack(
            [np.concatenate([u.numpy().ravel() for u in r.update]) for r in results]
        )
        agreement = (flat @ flat.T).sum(axis=1)
        weights = agreement / np.abs(agreement).sum()
        before = [v.numpy().copy() for v in learner.variables]
        out = learner.meta_train_step(batch(*tasks))
        np.testing.assert_allclose(out["task_weights"].numpy(), weights, rtol=1e-6)
        for k, variable in enumerate(learner.variables):
            expected = before[k] - sum(
                w * r.meta_gradient[k].numpy() for w, r in zip(weights, results)
            )
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, atol=1e-9)


def test_gradient_agreement_step_under_xla_equals_plain():
    rng = np.random.default_rng(12)
    episode = batch(*[classification_task(rng, dtype="float32") for _ in range(3)])
    outputs = []
    for jit in (False, True):
        learner = ALGORITHMS["maml"].learner(
            tiny_conv(seed=12),
            keras.optimizers.SGD(0.1),
            inner_lr=0.3,
            task_weighting="gradient_agreement",
            jit_compile=jit,
        )
        out = learner.meta_train_step(episode)
        outputs.append(
            (out["task_weights"].numpy(), [v.numpy().copy() for v in learner.variables])
        )
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], rtol=1e-4, atol=1e-6)
    for a, b in zip(outputs[0][1], outputs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
