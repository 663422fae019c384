"""A user's inner objective (iMAML's proximal one) through every meta-gradient
path, and an inner optimizer whose state starts from theta, against central
finite differences in float64."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import floatx, regression_task, seed_tensor, tiny_mlp
from tfmeta.algorithms import FOMAML, MAML, MetaSGD
from tfmeta.core.inner_optimizers import InnerSGD

ALPHA, LAMBDA, STEPS, EPS = 0.05, 0.7, 3, 1e-6


def proximal(lam=LAMBDA):
    """L(phi; D^tr) + lambda / 2 * ||phi - theta||^2 (iMAML's inner objective)."""

    def inner_loss(outputs, labels, fast_weights, theta):
        support = tf.reduce_mean(tf.square(outputs - labels))
        distance = tf.add_n(
            [tf.reduce_sum(tf.square(p - t)) for p, t in zip(fast_weights, theta)]
        )
        return support + lam / 2 * distance

    return inner_loss


@dataclasses.dataclass(frozen=True)
class WarmMomentum:
    """Heavy ball whose velocity starts at ``warm * phi_0``: a state that
    depends on theta."""

    learning_rate: float
    beta: float = 0.5
    warm: float = 0.3

    def describe(self):
        return {"inner_optimizer": "warm_momentum", "inner_lr": self.learning_rate}

    def init(self, params):
        return ([self.warm * p for p in params],)

    def update(self, params, grads, state, step, learning_rates=None):
        velocity = [self.beta * v + g for v, g in zip(state[0], grads)]
        new = [p - self.learning_rate * v for p, v in zip(params, velocity)]
        return new, (velocity,)


def run_steps(learner, optimizer, phi, theta, x, y, first, last, state=None):
    """Inner steps ``first..last - 1`` from phi with theta held as a constant
    (no tape over theta: the reference the finite differences evaluate)."""
    state = optimizer.init(phi) if state is None else state
    for step in range(first, last):
        with tf.GradientTape() as tape:
            tape.watch(phi)
            loss = proximal()(learner.forward(phi, x), y, phi, theta)
        grads = tape.gradient(loss, phi)
        phi, state = optimizer.update(phi, grads, state, step)
    return phi, state


def query_loss(learner, fast, task):
    return float(learner.loss(learner.forward(fast, task[2]), task[3]))


def finite_differences(learner, value):
    """Central differences of ``value(theta)`` along every coordinate."""
    params = [p.numpy() for p in learner.parameters()]
    sizes = [p.size for p in params]
    flat = np.concatenate([p.ravel() for p in params])

    def at(vector):
        parts = np.split(vector, np.cumsum(sizes)[:-1])
        return [tf.constant(v.reshape(p.shape)) for v, p in zip(parts, params)]

    unit = np.eye(flat.size)
    return np.array(
        [
            (value(at(flat + EPS * unit[i])) - value(at(flat - EPS * unit[i])))
            / (2 * EPS)
            for i in range(flat.size)
        ]
    )


def meta_gradient(learner_class, task, **kwargs):
    learner = learner_class(
        tiny_mlp(seed=3),
        keras.optimizers.SGD(0.0),
        inner_steps=STEPS,
        problem="regression",
        **{"inner_lr": ALPHA, "inner_loss": proximal(), **kwargs},
    )
    result = learner.meta_step.task(*task, seed_tensor())
    flat = np.concatenate([g.numpy().ravel() for g in result.meta_gradient])
    return learner, flat


SECOND_ORDER_PATHS = {
    "stored-unrolled": {},
    "stored-while-loop": {"unroll_inner_loop": False},
    "recomputed-unrolled": {"recompute": True},
    "recomputed-while-loop": {"recompute": True, "unroll_inner_loop": False},
    "recompute-steps-1": {"recompute": True, "recompute_steps": 1},
    "recompute-steps-0": {"recompute": True, "recompute_steps": 0},
}


@pytest.mark.parametrize("optimizer", ["sgd", "warm-momentum"])
def test_proximal_inner_loss_matches_finite_differences_on_every_path(optimizer):
    """d L(theta'(theta); D^val) / d theta with theta' from STEPS steps on the
    proximal objective (and, for warm-momentum, a state init(theta)): every
    second-order path equals central differences."""
    with floatx("float64"):
        task = regression_task(np.random.default_rng(0))
        inner = InnerSGD(ALPHA) if optimizer == "sgd" else WarmMomentum(ALPHA)
        extra = {} if optimizer == "sgd" else {"inner_optimizer": inner}
        if extra:
            extra["inner_lr"] = None
        gradients = {
            name: meta_gradient(MAML, task, **kwargs, **extra)
            for name, kwargs in SECOND_ORDER_PATHS.items()
        }
        learner = gradients["stored-unrolled"][0]

        def value(theta):
            fast, _ = run_steps(learner, inner, theta, theta, *task[:2], 0, STEPS)
            return query_loss(learner, fast, task)

        numeric = finite_differences(learner, value)
        for name, (_, analytic) in gradients.items():
            difference = float(np.max(np.abs(analytic - numeric)))
            print(f"{optimizer} {name}: max |analytic - FD| = {difference:.2e}")
            assert difference < 1e-8, name
        assert np.max(np.abs(numeric)) > 1e-2


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"recompute": True}, {"recompute": True, "unroll_inner_loop": False}],
    ids=["stored", "recomputed-unrolled", "recomputed-while-loop"],
)
def test_second_order_through_last_steps_matches_finite_differences(kwargs):
    """second_order_steps=2 of 3: step 0 is first order (phi_1 = theta -
    alpha * stop(g), d phi_1 / d theta = I); the last two steps are
    differentiated, their proximal term's theta too. So the meta-gradient is
    the derivative along d of G(phi_1 + eps d, theta + eps d), G the last
    two steps from phi_1 anchored at theta, then the query loss."""
    with floatx("float64"):
        task = regression_task(np.random.default_rng(0))
        learner, analytic = meta_gradient(MAML, task, second_order_steps=2, **kwargs)
        theta = learner.parameters()
        inner = learner.inner_optimizer
        phi_1, _ = run_steps(learner, inner, theta, theta, *task[:2], 0, 1)

        def value(shifted):
            move = [s - t for s, t in zip(shifted, theta)]
            start = [p + m for p, m in zip(phi_1, move)]
            fast, _ = run_steps(learner, inner, start, shifted, *task[:2], 1, STEPS)
            return query_loss(learner, fast, task)

        numeric = finite_differences(learner, value)
        difference = float(np.max(np.abs(analytic - numeric)))
        print(f"second_order_steps=2 {kwargs}: max |analytic - FD| = {difference:.2e}")
        assert difference < 1e-8
        # The theta term matters: the full second-order gradient differs.
        full = meta_gradient(MAML, task)[1]
        assert np.max(np.abs(full - analytic)) > 1e-4


def test_first_order_is_the_query_gradient_at_the_adapted_weights():
    """FOMAML with a proximal inner loss: d theta'/d theta = I (the inner
    gradient's theta term dropped with the rest), so the meta-gradient is
    grad L(theta'; D^val) at theta' from the proximal steps."""
    with floatx("float64"):
        task = regression_task(np.random.default_rng(0))
        learner, analytic = meta_gradient(FOMAML, task)
        theta = learner.parameters()
        fast, _ = run_steps(learner, InnerSGD(ALPHA), theta, theta, *task[:2], 0, STEPS)
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = learner.loss(learner.forward(fast, task[2]), task[3])
        by_hand = np.concatenate([g.numpy().ravel() for g in tape.gradient(loss, fast)])
        difference = float(np.max(np.abs(analytic - by_hand)))
        print(f"first order: max |analytic - by hand| = {difference:.2e}")
        assert difference < 1e-12
        plain = meta_gradient(FOMAML, task, inner_loss=None)[1]
        assert np.max(np.abs(plain - analytic)) > 1e-4  # the proximal term acts


def test_zero_proximal_weight_is_the_default_inner_loss():
    """lambda = 0 gives the problem's own loss: the same meta-gradient."""
    with floatx("float64"):
        task = regression_task(np.random.default_rng(1))
        for kwargs in ({}, {"recompute": True, "unroll_inner_loop": False}):
            default = meta_gradient(MAML, task, inner_loss=None, **kwargs)[1]
            zero = meta_gradient(MAML, task, inner_loss=proximal(0.0), **kwargs)[1]
            np.testing.assert_allclose(zero, default, rtol=1e-12, atol=1e-14)


def test_inner_loss_must_be_callable():
    with pytest.raises(ValueError, match="inner_loss must be a callable"):
        MAML(tiny_mlp(), keras.optimizers.SGD(0.1), inner_lr=0.1, inner_loss=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"recompute": True}, {"recompute": True, "unroll_inner_loop": False}],
    ids=["stored", "recomputed-unrolled", "recomputed-while-loop"],
)
def test_meta_sgd_with_a_proximal_inner_loss_matches_finite_differences(kwargs):
    """Meta-SGD (learned alpha per parameter, theta's own tensors after the
    model's): phi' = phi - alpha * grad of the proximal objective; the
    meta-gradient of the model's weights and of alpha equals central
    differences on every path."""
    with floatx("float64"):
        task = regression_task(np.random.default_rng(2))
        learner, analytic = meta_gradient(MetaSGD, task, **kwargs)
        count = len(learner.model.trainable_variables)

        def value(theta):
            weights, alphas = theta[:count], theta[count:]
            phi = list(weights)
            for _ in range(STEPS):
                with tf.GradientTape() as tape:
                    tape.watch(phi)
                    outputs = learner.forward(phi, task[0])
                    loss = proximal()(outputs, task[1], phi, weights)
                grads = tape.gradient(loss, phi)
                phi = [p - a * g for p, a, g in zip(phi, alphas, grads)]
            return query_loss(learner, phi, task)

        numeric = finite_differences(learner, value)
        difference = float(np.max(np.abs(analytic - numeric)))
        print(f"meta_sgd {kwargs}: max |analytic - FD| = {difference:.2e}")
        assert difference < 1e-8
