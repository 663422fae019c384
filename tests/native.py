"""Fixtures of the tests of the native kernels (``tfmeta.models.kernels``),
given to every test module by tests/conftest.py."""

import contextlib

import pytest

from tfmeta import runtime
from tfmeta.models import kernels

FORMS = ["tensorflow_ops", "native_kernels"]


@pytest.fixture
def library(monkeypatch):
    """The native kernels, on whatever TFMETA_NATIVE_KERNELS the tests run
    with (they must have built)."""
    monkeypatch.delenv("TFMETA_NATIVE_KERNELS", raising=False)
    monkeypatch.setattr(runtime, "_native_kernels", [True])
    loaded = kernels.library()
    assert loaded is not None, "the native kernels did not build"
    return loaded


@pytest.fixture(params=FORMS)
def form(request):
    """Each test using it runs on both forms: plain (TensorFlow ops), and
    within ``native_kernels``."""
    if request.param == "tensorflow_ops":
        return contextlib.nullcontext
    request.getfixturevalue("library")
    return kernels.native_kernels


def op_types(graph) -> set[str]:
    """The op types of a traced function's graph and of the functions it calls."""
    types = {op.type for op in graph.get_operations()}
    for function in graph.as_graph_def().library.function:
        types |= {node.op for node in function.node_def}
    return types


def meta_train_step_ops(learner_class, **kwargs):
    """The op types of a meta-train step of ``learner_class`` on a small
    max-pool conv4 (float32, 8x8 images, two 3-way tasks), and the model."""
    import keras
    import numpy as np
    import tensorflow as tf

    from tests.helpers import classification_task
    from tfmeta.models import conv4

    model = conv4(3, (8, 8, 1), filters=4, pooling="max", seed=0)
    learner = learner_class(model, keras.optimizers.SGD(0.1), **kwargs)
    rng = np.random.default_rng(0)
    tasks = [classification_task(rng, dtype="float32") for _ in range(2)]
    episode = tuple(tf.stack(parts) for parts in zip(*tasks))
    step = learner.meta_step._train_fn.get_concrete_function(episode)
    return op_types(step.graph), learner, tasks
