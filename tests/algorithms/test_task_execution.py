"""task_execution="map_fn" runs the same meta-steps as the per-task loop, in a
graph whose size does not depend on the meta-batch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import batch, classification_task, floatx, tiny_conv
from tfmeta.algorithms import ALGORITHMS
from tfmeta.core.weighting import stacked_task_weights, task_weights


def make(name, task_execution, weighting="uniform", **kwargs):
    optimizer = (
        keras.optimizers.SGD(0.5) if name == "reptile" else keras.optimizers.Adam(1e-2)
    )
    return ALGORITHMS[name].learner(
        tiny_conv(seed=4),
        optimizer,
        inner_lr=0.3,
        inner_steps=2,
        task_weighting=weighting,
        task_execution=task_execution,
        seed=11,
        **kwargs,
    )


def episodes(count=2, tasks=4):
    rng = np.random.default_rng(5)
    out = []
    for _ in range(count):
        sx, sy, qx, qy = batch(*[classification_task(rng) for _ in range(tasks)])
        # Task 1's query labels reversed: Gradient Agreement weights far from uniform.
        qy = tf.concat([qy[:1], tf.reverse(qy[1:2], [1]), qy[2:]], axis=0)
        out.append((sx, sy, qx, qy))
    return out


def run(learner, data):
    outputs = [learner.meta_train_step(e) for e in data]
    return [v.numpy() for v in learner.variables], outputs


@pytest.mark.parametrize(
    "name,weighting",
    [
        ("maml", "uniform"),
        ("maml", "gradient_agreement"),
        ("fomaml", "gradient_agreement"),
        ("reptile", "gradient_agreement"),
        ("reptile", "uniform"),
    ],
)
def test_map_fn_meta_steps_equal_the_loop(name, weighting):
    data = episodes()
    with floatx("float64"):
        loop_values, loop_out = run(make(name, "loop", weighting), data)
        mapped = make(name, "map_fn", weighting)
        mapped_values, mapped_out = run(mapped, data)
    assert mapped.train_tracing_count == 1
    for a, b in zip(loop_values, mapped_values):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)
    for a, b in zip(loop_out, mapped_out):
        for key in ("loss", "accuracy", "meta_gradient_norm", "task_weights"):
            np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=1e-9)
    weights = loop_out[-1]["task_weights"].numpy()
    if weighting == "gradient_agreement":
        assert np.abs(weights - 0.25).max() > 1e-3, weights


def test_map_fn_keeps_the_per_task_seeds():
    # Reptile's inner mini-batches are drawn from each task's seed.
    data = episodes(count=1)
    with floatx("float64"):
        loop = make("reptile", "loop", inner_batch_size=2)
        mapped = make("reptile", "map_fn", inner_batch_size=2)
        loop.meta_train_step(data[0])
        mapped.meta_train_step(data[0])
    for a, b in zip(loop.variables, mapped.variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-9, atol=1e-12)


def test_map_fn_eval_step_equals_the_loop():
    data = episodes(count=1)[0]
    with floatx("float64"):
        loop = make("maml", "loop").meta_eval_step(data, inner_steps=3)
        mapped = make("maml", "map_fn").meta_eval_step(data, inner_steps=3)
    assert mapped["loss"].shape == (4,)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(mapped[key].numpy(), loop[key].numpy(), rtol=1e-9)


def test_map_fn_with_xla_equals_the_loop():
    data = episodes(count=1)
    with floatx("float64"):
        loop_values, _ = run(make("maml", "loop"), data)
        xla_values, _ = run(make("maml", "map_fn", jit_compile=True), data)
    for a, b in zip(loop_values, xla_values):
        np.testing.assert_allclose(b, a, rtol=1e-7, atol=1e-10)


def _graph_nodes(task_execution, tasks):
    learner = make("maml", task_execution)
    episode = episodes(count=1, tasks=tasks)[0]
    episode = tuple(
        tf.cast(t, tf.float32) if t.dtype.is_floating else t for t in episode
    )
    graph = learner.meta_step._train_fn.get_concrete_function(episode).graph
    return len(graph.as_graph_def().node)


def test_map_fn_graph_does_not_grow_with_the_meta_batch():
    assert _graph_nodes("map_fn", 2) == _graph_nodes("map_fn", 16)
    # The loop's graph holds one call op per task and nothing else per task
    # (tasks are unpacked by one op per tensor, equal weights summed at once).
    assert _graph_nodes("loop", 16) == _graph_nodes("loop", 2) + 14


def test_unknown_task_execution_is_refused():
    with pytest.raises(ValueError, match="task_execution must be one of"):
        make("maml", "vectorized")


def test_stacked_weights_equal_the_per_task_form_and_the_replica_form():
    rng = np.random.default_rng(2)
    updates = [
        [tf.constant(rng.normal(size=(3, 2))), tf.constant(rng.normal(size=(4,)))]
        for _ in range(5)
    ]
    stacks = [tf.stack(parts) for parts in zip(*updates)]
    expected = task_weights("gradient_agreement", updates).numpy()
    np.testing.assert_allclose(
        stacked_task_weights("gradient_agreement", stacks).numpy(), expected, rtol=1e-12
    )
    # One replica holding every task: all_sum is the identity.
    replica = stacked_task_weights(
        "gradient_agreement", stacks, all_sum=lambda x: x, total_tasks=5
    )
    np.testing.assert_allclose(replica.numpy(), expected, rtol=1e-12)
    uniform = stacked_task_weights("uniform", stacks).numpy()
    np.testing.assert_allclose(uniform, np.full(5, 0.2))
