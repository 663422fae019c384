"""Prototypical Networks through the binaries' pieces: 4-way training
episodes for a 3-way model, a resumed run, an export whose signatures give
the in-memory learner's predictions, and a meta-step split over replicas."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from experiments import builders, task_data
from experiments.export import export_workdir, restore_learner
from tests.export import (
    Exported,
    episode,
    fake_omniglot,
    in_memory_learner,
    omniglot_png,
    tiny_config,
    train_workdir,
)
from tests.helpers import REPO
from tfmeta.data import preprocess_omniglot_image
from tfmeta.export import METADATA_FILE


def protonet_config(data_dir: pathlib.Path, **changes) -> dict:
    """3-way 1-shot tests, 4-way training tasks with 2 queries per class,
    conv4 of 2 max-pooled blocks of 8 filters (f_phi: 7*7*8 = 392 features)."""
    config = tiny_config("protonet", "omniglot", str(data_dir))
    config.update(train_n_way=4, q_query=2, **changes)
    return config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("protonet")
    config = protonet_config(fake_omniglot(root / "omniglot"))
    workdir = train_workdir(root / "runs" / "straight", config)
    result = export_workdir(str(workdir), str(root / "models" / "protonet"))
    return Exported(
        workdir, root / "models" / "protonet", pathlib.Path(result["path"]), config
    )


def test_training_tasks_have_train_n_way_classes(exported):
    data = task_data.build_data(exported.config)
    support_x, support_y, _, query_y = next(iter(data.train(0)))
    assert support_x.shape == (2, 4, 28, 28, 1) and query_y.shape == (2, 8)
    assert sorted(np.unique(support_y.numpy())) == [0, 1, 2, 3]
    validation = next(iter(data.val()))
    assert validation[1].shape == (2, 3) and validation[3].shape == (2, 6)
    assert "4-way meta-training tasks" in data.description
    # A learner whose head fixes the way is refused before any data is read.
    maml = {**tiny_config("maml", "omniglot", "/nonexistent"), "train_n_way": 4}
    with pytest.raises(ValueError, match="train_n_way=4 applies to the algorithms"):
        task_data.build_data(maml)


def test_meta_training_moves_the_embedding_and_not_the_head(exported):
    learner = in_memory_learner(exported)
    initial = builders.build_model(exported.config, (28, 28, 1))
    moved = {}
    for variable, start in zip(learner.model.variables, initial.variables):
        moved[variable.path] = not np.array_equal(variable.numpy(), start.numpy())
    assert not moved["conv4/head/kernel"] and not moved["conv4/head/bias"]
    assert moved["conv4/conv0/kernel"] and moved["conv4/norm1/gamma"]


def test_a_resumed_run_ends_where_the_straight_run_does(exported, tmp_path):
    workdir = tmp_path / "resumed"
    train_workdir(workdir, {**exported.config, "num_steps": 1})
    train_workdir(workdir, exported.config)  # a fresh learner resumes at step 1
    config = exported.config
    resumed, path = restore_learner(str(workdir), config, "latest")
    straight, _ = restore_learner(str(exported.workdir), config, "latest")
    assert path.endswith("ckpt-2")
    for a, b in zip(resumed.variables, straight.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_export_serves_the_in_memory_learners_predictions(exported):
    loaded = tf.saved_model.load(str(exported.path))
    learner = in_memory_learner(exported)
    support_x, support_y, query_x = episode(seed=1, k_shot=2, queries=5)
    served = loaded.signatures["serving_default"](
        support_x=tf.constant(support_x),
        support_y=tf.constant(support_y),
        query_x=tf.constant(query_x),
    )
    prototypes = learner.adapt(tf.constant(support_x), tf.constant(support_y))
    expected = learner.predict(prototypes, tf.constant(query_x), tf.constant(support_x))
    np.testing.assert_allclose(
        served["logits"].numpy(), expected.numpy(), rtol=1e-6, atol=1e-5
    )
    np.testing.assert_array_equal(
        served["classes"].numpy(), np.argmax(expected.numpy(), axis=1)
    )
    # PNG bytes decoded in the graph as in training.
    rng = np.random.default_rng(2)
    support_png = [omniglot_png(rng) for _ in range(6)]
    query_png = [omniglot_png(rng) for _ in range(4)]
    labels = np.repeat(np.arange(3), 2).astype(np.int32)
    images = loaded.signatures["adapt_and_predict_images"](
        support_images=tf.constant(support_png),
        support_y=tf.constant(labels),
        query_images=tf.constant(query_png),
    )["logits"].numpy()

    def decode(pngs):
        return tf.stack([preprocess_omniglot_image(tf.constant(p), 28) for p in pngs])

    support_images = decode(support_png)
    expected = learner.predict(
        learner.adapt(support_images, tf.constant(labels)),
        decode(query_png),
        support_images,
    ).numpy()
    np.testing.assert_allclose(images, expected, rtol=1e-6, atol=1e-5)


def test_the_export_describes_the_prototype_rule(exported):
    stored = json.loads((exported.path / METADATA_FILE).read_text())
    assert stored["algorithm"] == "protonet" and stored["distance"] == "euclidean"
    assert stored["n_way"] == 3 and stored["embedding_dim"] == 392
    assert stored["input_shape"] == [28, 28, 1] and not stored["transductive"]
    assert stored["signatures"] == (
        "adapt_and_predict,adapt_and_predict_images,metadata"
    )
    loaded = tf.saved_model.load(str(exported.path))
    values = loaded.signatures["metadata"]()
    assert values["distance"].numpy().decode() == "euclidean"


_MIRRORED = """
import keras
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
from tests.helpers import batch, classification_task, floatx, tiny_conv
from tfmeta.algorithms import PrototypicalNetwork

rng = np.random.default_rng(0)
with floatx("float64"):
    episodes = [
        batch(*[classification_task(rng) for _ in range(4)]) for _ in range(2)
    ]

    def run(learner):
        outputs = [learner.meta_train_step(e) for e in episodes]
        return [v.numpy() for v in learner.variables], outputs

    def learner():
        model = tiny_conv(n_way=3, seed=3, pooling="max")
        return PrototypicalNetwork(model, keras.optimizers.Adam(0.01))

    single_values, single_out = run(learner())
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored = learner()
    assert mirrored.distributed and strategy.num_replicas_in_sync == 2
    mirrored_values, mirrored_out = run(mirrored)
for a, b in zip(single_values, mirrored_values):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
for a, b in zip(single_out, mirrored_out):
    for key in ("loss", "accuracy", "meta_gradient_norm"):
        np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=1e-6)
print("same")
"""


def test_a_meta_step_split_over_two_replicas_equals_one_device():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.split() == ["same"], done.stderr[-3000:]
