"""The native kernels: built here, the batch-norm kernel equal to its closed
form, used where they can run and replaced by TensorFlow ops where they
cannot. (The pooling kernels' figures: tests/models/test_max_pool.py.)"""

import contextlib
import logging
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfmeta import runtime
from tfmeta.models import kernels
from tfmeta.models.batch_norm import batch_norm_grad_grad, fused_batch_norm
from tfmeta.models.kernels import native_kernels


@pytest.fixture(autouse=True)
def _native_kernels_on(monkeypatch):
    """The native kernel's default (on), whatever TFMETA_NATIVE_KERNELS the
    tests run with; a test that turns it off does so itself."""
    monkeypatch.delenv("TFMETA_NATIVE_KERNELS", raising=False)
    monkeypatch.setattr(runtime, "_native_kernels", [True])


def _inputs(shape, seed, mean=0.0):
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    big = [rng.normal(size=shape) for _ in range(3)]
    big[0] = big[0] * 2.0 + mean
    small = [rng.normal(size=channels) for _ in range(3)]
    x, dy, ddx = big
    scale, ddscale, ddoffset = small
    return x, scale, dy, ddx, ddscale, ddoffset


def _native():
    op = kernels.batch_norm_grad_grad_op()
    assert op is not None, "the native kernel did not build (see the warning)"
    return op


@pytest.mark.parametrize(
    "shape, mean", [((20, 7, 7, 16), 0.0), ((5, 3, 3, 4), 30.0), ((9, 1, 1, 3), -2.0)]
)
def test_native_kernel_equals_the_closed_form(shape, mean):
    """float32 native kernel against the closed form in float64 (itself checked
    against automatic differentiation), including a mean far from zero."""
    values = _inputs(shape, seed=len(shape) + int(mean), mean=mean)
    want = batch_norm_grad_grad(*[tf.constant(v) for v in values], 1e-3)
    got = _native()(*[tf.constant(v, tf.float32) for v in values], epsilon=1e-3)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == tf.float32
        np.testing.assert_allclose(
            g.numpy(), w.numpy(), atol=2e-6 * np.abs(w.numpy()).max()
        )


def test_native_kernel_refuses_mismatched_shapes():
    x, scale, dy, ddx, ddscale, ddoffset = [
        tf.constant(v, tf.float32) for v in _inputs((4, 2, 2, 3), seed=1)
    ]
    with pytest.raises(tf.errors.InvalidArgumentError, match="one shape"):
        _native()(x, scale, dy[:2], ddx, ddscale, ddoffset, epsilon=1e-3)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must be \[C\]"):
        _native()(x, scale[:2], dy, ddx, ddscale, ddoffset, epsilon=1e-3)


def _second_order_graph_and_values(jit_compile=False, native=True):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(6, 4, 4, 3)), tf.float32)
    scale = tf.constant(rng.normal(size=3), tf.float32)
    offset = tf.constant(rng.normal(size=3), tf.float32)
    weights = tf.constant(rng.normal(size=x.shape), tf.float32)

    @tf.function(jit_compile=jit_compile, autograph=False)
    def hessian_terms(x, scale, offset):
        with tf.GradientTape() as outer:
            outer.watch([x, scale, offset])
            with tf.GradientTape() as inner:
                inner.watch([x, scale, offset])
                y = fused_batch_norm(x, scale, offset, 1e-3)
                loss = tf.reduce_sum(tf.sin(y) * weights)
            grads = inner.gradient(loss, [x, scale, offset])
            objective = sum(tf.reduce_sum(tf.square(g)) for g in grads)
        return outer.gradient(objective, [x, scale, offset])

    with native_kernels() if native else contextlib.nullcontext():
        graph = hessian_terms.get_concrete_function(x, scale, offset).graph
    types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        types |= {node.op for node in function.node_def}
    return types, [t.numpy() for t in hessian_terms(x, scale, offset)]


def test_second_derivatives_use_the_native_kernel_and_match_tensorflow_ops(
    monkeypatch,
):
    _native()
    types, native = _second_order_graph_and_values()
    assert "TfmetaBatchNormGradGrad" in types
    monkeypatch.setenv("TFMETA_NATIVE_KERNELS", "0")
    types, composed = _second_order_graph_and_values()
    assert "TfmetaBatchNormGradGrad" not in types
    for got, want in zip(native, composed):
        np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())


def test_the_runtime_switch_turns_the_native_kernel_off(monkeypatch):
    """``tfmeta.runtime.configure(native_kernels=False)``: steps traced after
    it use TensorFlow ops; ``TFMETA_NATIVE_KERNELS``, where set, wins."""
    _native()
    runtime.configure(cpu_threading=None, malloc_arenas=None, onednn=None)
    assert "TfmetaBatchNormGradGrad" in _second_order_graph_and_values()[0]
    settings = runtime.configure(
        cpu_threading=None, malloc_arenas=None, onednn=None, native_kernels=False
    )
    assert not settings.native_kernels and not kernels.enabled()
    assert "TfmetaBatchNormGradGrad" not in _second_order_graph_and_values()[0]
    monkeypatch.setenv("TFMETA_NATIVE_KERNELS", "1")
    assert "TfmetaBatchNormGradGrad" in _second_order_graph_and_values()[0]


def test_xla_compiled_functions_use_tensorflow_ops():
    """XLA has no kernel for the native op: inside jit_compile the closed form
    of TensorFlow ops is traced instead, and the values agree."""
    _native()
    types, xla = _second_order_graph_and_values(jit_compile=True)
    assert "TfmetaBatchNormGradGrad" not in types
    _, native = _second_order_graph_and_values()
    for got, want in zip(xla, native):
        np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())


def test_a_failed_build_warns_and_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(kernels, "_loaded", {})
    monkeypatch.setenv("TFMETA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with caplog.at_level(logging.WARNING, logger="tfmeta.models.kernels"):
        assert kernels.batch_norm_grad_grad_op() is None
    assert "native kernels unavailable" in caplog.text
    assert "no C++ compiler" in caplog.text
    assert not list(tmp_path.rglob("*.so"))
    types, _ = _second_order_graph_and_values()
    assert "TfmetaBatchNormGradGrad" not in types


def _op_in_a_new_process(env):
    code = (
        "from tfmeta.models import kernels\n"
        "op = kernels.batch_norm_grad_grad_op()\n"
        "print('op', op is not None, kernels.library_path())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "op True" in result.stdout, result.stderr[-2000:]
    built, path = result.stdout.split()[-2:]
    return built == "True", pathlib.Path(path)


def test_the_build_is_cached_and_reused_by_later_processes(tmp_path):
    env = {**os.environ, "TFMETA_CACHE_DIR": str(tmp_path)}
    env.pop("TFMETA_NATIVE_KERNELS", None)
    built, path = _op_in_a_new_process(env)
    assert built, "the kernel did not build"
    assert tmp_path in path.parents and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file
    stamp = path.stat().st_mtime_ns
    # A later process loads that build: the file is not written again.
    built, again = _op_in_a_new_process(env)
    assert built and again == path and path.stat().st_mtime_ns == stamp


def test_only_meta_train_steps_use_the_native_kernel():
    """Functions traced outside ``native_kernels`` (exported models above all,
    which must load where the kernel is not built) get TensorFlow ops; a
    learner's meta-train step gets the kernel."""
    _native()
    types, outside = _second_order_graph_and_values(native=False)
    assert "TfmetaBatchNormGradGrad" not in types
    _, inside = _second_order_graph_and_values()
    for got, want in zip(inside, outside):
        np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())

    import keras

    from tests.helpers import classification_task
    from tfmeta.algorithms import MAML
    from tfmeta.models import conv4

    model = conv4(3, (8, 8, 1), filters=4, seed=0)
    learner = MAML(model, keras.optimizers.SGD(0.1), inner_lr=0.1, inner_steps=1)
    rng = np.random.default_rng(0)
    tasks = [classification_task(rng, dtype="float32") for _ in range(2)]
    episode = tuple(tf.stack(parts) for parts in zip(*tasks))
    graph = learner.meta_step._train_fn.get_concrete_function(episode).graph
    library = graph.as_graph_def().library.function
    assert any(n.op == "TfmetaBatchNormGradGrad" for f in library for n in f.node_def)
