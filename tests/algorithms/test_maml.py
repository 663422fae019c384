"""MAML's meta-gradient against finite differences; FOMAML against its definition."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    classification_task,
    floatx,
    regression_task,
    seed_tensor,
    tiny_conv,
    tiny_mlp,
)
from tfmeta.algorithms import FOMAML, MAML
from tfmeta.core.inner_optimizers import make_inner_optimizer


def maml_objective(learner, params, task, steps):
    """L(theta'; D^val) with theta' from plain SGD on the support set (independent of the learner's tapes)."""
    support_x, support_y, query_x, query_y = task
    fast = list(params)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = learner.loss(learner.forward(fast, support_x), support_y)
        grads = tape.gradient(loss, fast)
        fast = [w - learner.inner_lr * g for w, g in zip(fast, grads)]
    return learner.loss(learner.forward(fast, query_x), query_y), fast


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_gradient_matches_finite_differences_mlp(steps):
    with floatx("float64"):
        model = tiny_mlp(seed=3)
        learner = MAML(
            model,
            keras.optimizers.SGD(0.0),
            inner_lr=0.05,
            inner_steps=steps,
            problem="regression",
        )
        task = regression_task(np.random.default_rng(0))
        result = learner.meta_step.task(*task, seed_tensor())
        analytic = np.concatenate([g.numpy().ravel() for g in result.meta_gradient])
        params = learner.parameters()
        sizes = [int(np.prod(p.shape)) for p in params]
        flat = np.concatenate([p.numpy().ravel() for p in params])

        def objective(vector):
            parts = np.split(vector, np.cumsum(sizes)[:-1])
            values = [
                tf.constant(part.reshape(p.shape)) for part, p in zip(parts, params)
            ]
            return float(maml_objective(learner, values, task, steps)[0])

        eps = 1e-6
        numeric = np.array(
            [
                (
                    objective(flat + eps * np.eye(flat.size)[i])
                    - objective(flat - eps * np.eye(flat.size)[i])
                )
                / (2 * eps)
                for i in range(flat.size)
            ]
        )
        assert relative_error(analytic, numeric) < 1e-5


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_gradient_matches_finite_differences_conv_batch_norm(steps):
    """Exact through MetaBatchNorm: directional derivatives along random directions."""
    with floatx("float64"):
        model = tiny_conv(seed=1)
        # The objective below normalizes the query batch by its own statistics.
        learner = MAML(
            model,
            keras.optimizers.SGD(0.0),
            inner_lr=0.5,
            inner_steps=steps,
            transductive=True,
        )
        rng = np.random.default_rng(1)
        task = classification_task(rng)
        result = learner.meta_step.task(*task, seed_tensor())
        params = learner.parameters()
        eps = 1e-5
        for _ in range(4):
            direction = [tf.constant(rng.normal(size=p.shape)) for p in params]
            plus = maml_objective(
                learner, [p + eps * d for p, d in zip(params, direction)], task, steps
            )[0]
            minus = maml_objective(
                learner, [p - eps * d for p, d in zip(params, direction)], task, steps
            )[0]
            numeric = float((plus - minus) / (2 * eps))
            analytic = float(
                sum(
                    tf.reduce_sum(g * d)
                    for g, d in zip(result.meta_gradient, direction)
                )
            )
            assert abs(analytic - numeric) / abs(numeric) < 1e-5


def test_first_order_equals_query_gradient_at_adapted_weights():
    with floatx("float64"):
        model = tiny_conv(seed=2)
        learner = FOMAML(
            model,
            keras.optimizers.SGD(0.0),
            inner_lr=0.5,
            inner_steps=2,
            task_weighting="gradient_agreement",  # the weighting that reads updates
            transductive=True,  # as the query gradient below
        )
        task = classification_task(np.random.default_rng(2))
        result = learner.meta_step.task(*task, seed_tensor())
        _, fast = maml_objective(learner, learner.parameters(), task, 2)
        with tf.GradientTape() as tape:
            tape.watch(fast)
            loss = learner.loss(learner.forward(fast, task[2]), task[3])
        expected = tape.gradient(loss, fast)
        for got, want in zip(result.meta_gradient, expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)
        # theta - theta' is the sum of the inner steps' moves
        assert len(result.update) == len(fast)
        for update, p, f in zip(result.update, learner.parameters(), fast):
            np.testing.assert_allclose(
                update.numpy(), (p - f).numpy(), rtol=1e-9, atol=1e-12
            )


def test_first_and_second_order_differ_on_nonlinear_model():
    with floatx("float64"):
        model = tiny_conv(seed=4)
        task = classification_task(np.random.default_rng(4))
        second = MAML(model, keras.optimizers.SGD(0.0), inner_lr=0.5).meta_step.task(
            *task, seed_tensor()
        )
        first = FOMAML(model, keras.optimizers.SGD(0.0), inner_lr=0.5).meta_step.task(
            *task, seed_tensor()
        )
        a = np.concatenate([g.numpy().ravel() for g in second.meta_gradient])
        b = np.concatenate([g.numpy().ravel() for g in first.meta_gradient])
        assert relative_error(b, a) > 1e-2


def test_zero_inner_steps_is_plain_gradient():
    """With no inner step theta' = theta: MAML's meta-gradient is the query-loss gradient at theta."""
    with floatx("float64"):
        model = tiny_mlp(seed=5)
        learner = MAML(
            model,
            keras.optimizers.SGD(0.0),
            inner_lr=0.1,
            inner_steps=0,
            problem="regression",
        )
        task = regression_task(np.random.default_rng(5))
        result = learner.meta_step.task(*task, seed_tensor())
        params = learner.parameters()
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = learner.loss(learner.forward(params, task[2]), task[3])
        for got, want in zip(result.meta_gradient, tape.gradient(loss, params)):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-10)


def test_second_order_only_on_last_steps_interpolates_between_first_and_second_order():
    with floatx("float64"):
        model = tiny_conv(seed=6)
        task = classification_task(np.random.default_rng(6))

        def gradient(**kwargs):
            learner = MAML(
                model, keras.optimizers.SGD(0.0), inner_lr=0.5, inner_steps=3, **kwargs
            )
            result = learner.meta_step.task(*task, seed_tensor())
            return np.concatenate([g.numpy().ravel() for g in result.meta_gradient])

        full = gradient()
        np.testing.assert_allclose(gradient(second_order_steps=3), full, rtol=1e-12)
        np.testing.assert_allclose(gradient(second_order_steps=5), full, rtol=1e-12)
        np.testing.assert_allclose(
            gradient(second_order_steps=0),
            gradient(first_order=True),
            rtol=1e-9,
            atol=1e-12,
        )
        last_only = gradient(second_order_steps=1)
        assert relative_error(last_only, full) > 1e-3
        assert relative_error(last_only, gradient(first_order=True)) > 1e-3


@pytest.mark.parametrize("unroll", [True, False], ids=["unrolled", "while-loops"])
@pytest.mark.parametrize(
    "case",
    [
        {"model": "conv", "transductive": True},
        {"model": "conv", "transductive": False, "second_order_steps": 2},
        {"model": "conv", "adapt_variables": "head"},
        {"model": "mlp", "inner_optimizer": "adam"},
        {"model": "conv", "transductive": True, "inner_steps": 1},
        {"model": "mlp", "inner_steps": 2, "second_order_steps": 0},
    ],
    ids=[
        "conv-bn",
        "non-transductive-last-2-second-order",
        "head-only",
        "mlp-adam",
        "one-step",
        "all-first-order",
    ],
)
def test_recompute_gives_the_stored_activations_meta_gradient(case, unroll):
    """Recomputing each inner step's activations in the backward pass changes
    nothing: BatchNorm in both modes, ANIL (the body's gradient flows through
    every step), a first-order prefix, and an inner optimizer with state;
    with the passes unrolled or as tf.while_loops."""
    case = dict(case)
    steps = case.pop("inner_steps", 4)
    with floatx("float64"):
        rng = np.random.default_rng(11)
        if case.pop("model") == "conv":
            model = tiny_conv(seed=11)
            task = classification_task(rng)
        else:
            model = tiny_mlp(seed=11)
            task = regression_task(rng)
            case["problem"] = "regression"
        if case.pop("inner_optimizer", None) == "adam":
            case["inner_optimizer"] = make_inner_optimizer("adam", 0.05)
            case["inner_lr"] = None  # alpha is the inner optimizer's

        def result(recompute):
            learner = MAML(
                model,
                keras.optimizers.SGD(0.0),
                inner_steps=steps,
                recompute=recompute,
                unroll_inner_loop=unroll or not recompute,
                **{"inner_lr": 0.3, **case},
            )
            return learner.meta_step.task(*task, seed_tensor())

        stored, recomputed = result(False), result(True)
        for a, b in zip(stored.meta_gradient, recomputed.meta_gradient):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(recomputed.query_loss, stored.query_loss, rtol=1e-12)
        assert max(float(tf.norm(g)) for g in stored.meta_gradient) > 1e-6


@pytest.mark.parametrize("recompute_steps", [0, 1, 2, 3, 7])
def test_recomputing_only_the_first_steps_gives_the_same_meta_gradient(
    recompute_steps,
):
    """Keeping the activations of the steps after the first ``recompute_steps``
    (one tape over them and the query loss) changes nothing, with a
    first-order prefix that straddles the boundary; 7 > inner_steps - 1 is
    all but the last step."""
    with floatx("float64"):
        rng = np.random.default_rng(13)
        model = tiny_conv(seed=13)
        task = classification_task(rng)

        def result(**kwargs):
            learner = MAML(
                model,
                keras.optimizers.SGD(0.0),
                inner_lr=0.3,
                inner_steps=4,
                transductive=False,
                second_order_steps=2,
                **kwargs,
            )
            return learner.meta_step.task(*task, seed_tensor())

        stored = result()
        partial = result(recompute=True, recompute_steps=recompute_steps)
        for a, b in zip(stored.meta_gradient, partial.meta_gradient):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(partial.query_loss, stored.query_loss, rtol=1e-12)
        assert max(float(tf.norm(g)) for g in stored.meta_gradient) > 1e-6


def test_recompute_steps_are_checked():
    common = {"inner_lr": 0.1, "inner_steps": 3}
    with pytest.raises(ValueError, match="recompute_steps needs recompute=True"):
        MAML(tiny_mlp(), keras.optimizers.SGD(0.1), recompute_steps=1, **common)
    with pytest.raises(ValueError, match="recompute_steps must be >= 0"):
        MAML(
            tiny_mlp(),
            keras.optimizers.SGD(0.1),
            recompute=True,
            recompute_steps=-1,
            **common,
        )
    with pytest.raises(ValueError, match="applies to the unrolled inner loop"):
        MAML(
            tiny_mlp(),
            keras.optimizers.SGD(0.1),
            recompute=True,
            recompute_steps=1,
            unroll_inner_loop=False,
            **common,
        )


def test_recompute_is_refused_for_first_order():
    with pytest.raises(ValueError, match="recompute applies to second-order MAML"):
        MAML(
            tiny_mlp(),
            keras.optimizers.SGD(0.1),
            inner_lr=0.1,
            first_order=True,
            recompute=True,
        )


@pytest.mark.parametrize(
    "case",
    [
        {"model": "conv", "transductive": True},
        {"model": "conv", "transductive": False, "second_order_steps": 2},
        {"model": "conv", "adapt_variables": "head"},
        {"model": "mlp", "inner_optimizer": "adam"},
    ],
    ids=["conv-bn", "non-transductive-last-2-second-order", "head-only", "mlp-adam"],
)
def test_while_loop_inner_loop_gives_the_unrolled_meta_gradient(case):
    """Second order through a differentiated tf.while_loop (unroll_inner_loop=False)
    equals the unrolled loop that the finite-difference tests check."""
    case = dict(case)
    with floatx("float64"):
        rng = np.random.default_rng(12)
        if case.pop("model") == "conv":
            model = tiny_conv(seed=12)
            task = classification_task(rng)
        else:
            model = tiny_mlp(seed=12)
            task = regression_task(rng)
            case["problem"] = "regression"
        if case.pop("inner_optimizer", None) == "adam":
            case["inner_optimizer"] = make_inner_optimizer("adam", 0.05)
            case["inner_lr"] = None  # alpha is the inner optimizer's

        def result(unroll):
            learner = MAML(
                model,
                keras.optimizers.SGD(0.0),
                inner_steps=4,
                unroll_inner_loop=unroll,
                task_weighting="gradient_agreement",  # so the updates are returned
                **{"inner_lr": 0.3, **case},
            )
            return learner.meta_step.task(*task, seed_tensor())

        unrolled, looped = result(True), result(False)
        for a, b in zip(unrolled.meta_gradient, looped.meta_gradient):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-10, atol=1e-13)
        assert len(unrolled.update) == len(looped.update) == len(unrolled.meta_gradient)
        for a, b in zip(unrolled.update, looped.update):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-14)
        assert max(float(tf.norm(g)) for g in unrolled.meta_gradient) > 1e-6


def test_while_loop_inner_loop_with_xla_equals_the_unrolled_step():
    with floatx("float64"):
        rng = np.random.default_rng(13)
        episode = tuple(
            tf.stack(parts)
            for parts in zip(*[classification_task(rng) for _ in range(2)])
        )

        def run(unroll, jit_compile):
            learner = MAML(
                tiny_conv(seed=13),
                keras.optimizers.SGD(0.1),
                inner_lr=0.3,
                inner_steps=3,
                unroll_inner_loop=unroll,
                jit_compile=jit_compile,
            )
            learner.meta_train_step(episode)
            return [v.numpy() for v in learner.variables]

        for a, b in zip(run(True, False), run(False, True)):
            np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize(
    "recompute",
    [{"recompute_steps": 1}, {"unroll_inner_loop": False}],
    ids=["first-step", "while-loops"],
)
def test_recomputed_step_with_xla_equals_the_stored_step(recompute):
    """The recomputing reverse pass (control dependencies, identities, tapes
    per step) compiled by XLA gives the plain step's parameters."""
    with floatx("float64"):
        rng = np.random.default_rng(14)
        episode = tuple(
            tf.stack(parts)
            for parts in zip(*[classification_task(rng) for _ in range(2)])
        )

        def run(jit_compile, **kwargs):
            learner = MAML(
                tiny_conv(seed=14),
                keras.optimizers.SGD(0.1),
                inner_lr=0.3,
                inner_steps=3,
                jit_compile=jit_compile,
                **kwargs,
            )
            learner.meta_train_step(episode)
            return [v.numpy() for v in learner.variables]

        stored = run(False)
        for a, b in zip(stored, run(True, recompute=True, **recompute)):
            np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-11)
        assert any(
            not np.allclose(a, v)
            for a, v in zip(stored, [w.numpy() for w in tiny_conv(seed=14).variables])
        )
