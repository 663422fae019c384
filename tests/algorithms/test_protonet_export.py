"""Prototypical Networks through the binaries' pieces: 4-way training
episodes for a 3-way model, the head left untrained, the export's metadata,
and a meta-step split over replicas (resume and served predictions:
``test_conformance.py``)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from experiments.export import export_workdir
from tests.export import (
    Exported,
    fake_omniglot,
    in_memory_learner,
    tiny_config,
    train_workdir,
)
from tests.helpers import REPO
from tfmeta.configs.build import build_model
from tfmeta.data.tasks import task_sets
from tfmeta.export import METADATA_FILE

# One worker computes the trained export (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("protonet_export")


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
    data = task_sets(exported.config)
    support_x, support_y, _, query_y = next(iter(data.train(0)))
    assert support_x.shape == (2, 4, 28, 28, 1) and query_y.shape == (2, 8)
    assert sorted(np.unique(support_y.numpy())) == [0, 1, 2, 3]
    validation = next(iter(data.val()))
    assert validation[1].shape == (2, 3) and validation[3].shape == (2, 6)
    assert "4-way meta-training tasks" in data.description
    # A learner whose head fixes the way is refused before any data is read.
    maml = {**tiny_config("maml", "omniglot", "/nonexistent"), "train_n_way": 4}
    with pytest.raises(ValueError, match="train_n_way=4 applies to the algorithms"):
        task_sets(maml)


def test_meta_training_moves_the_embedding_and_not_the_head(exported):
    learner = in_memory_learner(exported)
    initial = build_model(exported.config, (28, 28, 1))
    moved = {}
    for variable, start in zip(learner.model.variables, initial.variables):
        moved[variable.path] = not np.array_equal(variable.numpy(), start.numpy())
    assert not moved["conv4/head/kernel"] and not moved["conv4/head/bias"]
    assert moved["conv4/conv0/kernel"] and moved["conv4/norm1/gamma"]


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
