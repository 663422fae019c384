"""Small models and tasks shared by the tests."""

from __future__ import annotations

import contextlib
import itertools
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmeta.models import conv4, mlp
from tfmeta.models.batch_norm import MetaBatchNorm

REPO = pathlib.Path(__file__).resolve().parents[1]


def fresh_python(code: str, onednn_env: str | None = None) -> list[str]:
    """The words ``code`` prints in a fresh interpreter at the repository root,
    with TF_ENABLE_ONEDNN_OPTS set to ``onednn_env`` (None: unset) and no
    MALLOC_ARENA_MAX."""
    unset = ("TF_ENABLE_ONEDNN_OPTS", "MALLOC_ARENA_MAX")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if onednn_env is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn_env
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return done.stdout.split()


def omniglot_dir() -> pathlib.Path:
    """The real Omniglot archives: $TFMETA_OMNIGLOT_DIR or ../shared/data/omniglot; skips when absent."""
    path = pathlib.Path(
        os.environ.get("TFMETA_OMNIGLOT_DIR")
        or REPO.parent / "shared" / "data" / "omniglot"
    )
    if not any(path.glob("images_*")):
        pytest.skip(
            f"real Omniglot archives not found in {path} (set TFMETA_OMNIGLOT_DIR to run this test)"
        )
    return path


@contextlib.contextmanager
def floatx(dtype: str):
    # Keras caches its global dtype policy once a layer is built: set both.
    previous, previous_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(previous)
        keras.config.set_dtype_policy(previous_policy)


def tiny_mlp(
    seed: int = 0, hidden=(6,), output_dim: int = 1, input_dim: int = 1
) -> keras.Model:
    return mlp(output_dim=output_dim, input_dim=input_dim, hidden=hidden, seed=seed)


def tiny_conv(n_way: int = 3, seed: int = 1, pooling: str = "stride") -> keras.Model:
    return conv4(
        n_way, input_shape=(8, 8, 1), filters=4, depth=2, pooling=pooling, seed=seed
    )


def zero_step_sizes(model: keras.Model) -> set[str]:
    """Names (``alpha_<i>``) of the learned step sizes whose meta-gradient is
    an exact zero: those of the convolution biases ``model`` hands to the
    batch norm after them (``ConvNet``'s ``fold_bias``), whose inner gradient
    is an exact zero with the maps' own moments."""
    if not getattr(model, "fold_bias", False):
        return set()
    layers = model.layers
    handed = {
        layer.bias.path
        for layer, following in itertools.pairwise(layers)
        if isinstance(layer, keras.layers.Conv2D)
        and layer.use_bias
        and isinstance(following, MetaBatchNorm)
    }
    return {
        f"alpha_{i}"
        for i, variable in enumerate(model.trainable_variables)
        if variable.path in handed
    }


def classification_task(
    rng: np.random.Generator,
    n_way=3,
    k_shot=2,
    q_query=2,
    shape=(8, 8, 1),
    dtype="float64",
):
    support_x = tf.constant(rng.normal(size=(n_way * k_shot, *shape)), dtype)
    support_y = tf.constant(np.repeat(np.arange(n_way), k_shot), tf.int32)
    query_x = tf.constant(rng.normal(size=(n_way * q_query, *shape)), dtype)
    query_y = tf.constant(np.repeat(np.arange(n_way), q_query), tf.int32)
    return support_x, support_y, query_x, query_y


def regression_task(rng: np.random.Generator, k=5, dtype="float64"):
    x = rng.uniform(-5, 5, size=(2 * k, 1))
    y = 2.0 * np.sin(x - 0.5)
    return (
        tf.constant(x[:k], dtype),
        tf.constant(y[:k], dtype),
        tf.constant(x[k:], dtype),
        tf.constant(y[k:], dtype),
    )


def batch(*tasks):
    """Stacks single tasks into a meta-batch episode."""
    return tuple(tf.stack(parts) for parts in zip(*tasks))


def seed_tensor(index: int = 0) -> tf.Tensor:
    return tf.constant([0, index], tf.int64)


def random_directions(learner, count: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``count`` random directions in theta (arrays aligned with ``learner.variables``)."""
    rng = np.random.default_rng(seed)
    return [[rng.normal(size=v.shape) for v in learner.variables] for _ in range(count)]


def check_directional_derivatives(
    learner, gradient, value, directions, epsilon=1e-6, rel=1e-6, abs=1e-9
) -> None:
    """For each direction d (arrays aligned with ``learner.variables``), the
    central difference (value(theta + eps d) - value(theta - eps d)) / 2 eps
    equals <gradient, d>; ``value()`` reads the learner's variables."""
    theta = [v.numpy().copy() for v in learner.variables]
    for direction in directions:
        sides = []
        for sign in (1.0, -1.0):
            for variable, t, d in zip(learner.variables, theta, direction):
                variable.assign(t + sign * epsilon * d)
            sides.append(value())
        for variable, t in zip(learner.variables, theta):
            variable.assign(t)
        numeric = (sides[0] - sides[1]) / (2 * epsilon)
        analytic = sum(
            float(np.sum(np.asarray(g) * d)) for g, d in zip(gradient, direction)
        )
        assert analytic == pytest.approx(numeric, rel=rel, abs=abs)


def first_order_through_start(learner, task) -> list:
    """The first-order meta-gradient of a learner whose inner loop starts at
    ``initial_weights(theta, support)``: d theta'/d start = I, so the query
    gradient at theta' chained through the start's Jacobian."""
    support_x, support_y, query_x, query_y = task
    params = learner.parameters()
    with tf.GradientTape() as tape:
        tape.watch(params)
        start = learner.initial_weights(params, support_x, support_y)
    steps = learner.inner_steps
    fast = learner.inner_loop(start, support_x, support_y, steps, False, seed_tensor())
    with tf.GradientTape() as query_tape:
        query_tape.watch(fast)
        loss = learner.loss(learner.predict(fast, query_x, support_x), query_y)
    return tape.gradient(
        start,
        params,
        output_gradients=query_tape.gradient(loss, fast),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )


def query_loss_after_inner_loop(learner, task, steps):
    """The query loss after the inner loop from the learner's start for the
    task (``initial_weights``), from the current variables (eager, no tape
    through the meta-step's machinery): the objective finite differences
    probe."""
    support_x, support_y, query_x, query_y = task
    start = learner.initial_weights(learner.parameters(), support_x, support_y)
    fast = learner.inner_loop(start, support_x, support_y, steps, False, seed_tensor())
    return float(learner.loss(learner.predict(fast, query_x, support_x), query_y))
