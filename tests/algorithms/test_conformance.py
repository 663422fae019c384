"""One suite every image learner passes: a training run through the
binaries' builders, resume equal to the uninterrupted run (theta, the
learner's own meta-parameters and the optimizer), an export, and served
predictions (tensor and image signatures) equal to the in-memory learner's.

MAML, FOMAML and Reptile go through the same steps in ``tests/export`` and
``tests/training``; this suite covers the learners added on the core's hooks
(own meta-parameters, per-step parameters, a per-task start, prototypes).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from experiments.export import export_workdir, restore_learner
from tests.export import (
    IMAGE_SIZE,
    episode,
    fake_omniglot,
    in_memory_learner,
    omniglot_png,
    tiny_config,
    train_workdir,
)
from tfmeta.data.omniglot import preprocess_omniglot_image

ALGORITHMS = ("maml_plus_plus", "meta_sgd", "proto_maml", "protonet")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fake_omniglot(tmp_path_factory.mktemp("conformance") / "omniglot")


def config_of(name: str, data_dir, num_steps: int) -> dict:
    config = tiny_config(name, "omniglot", str(data_dir))
    # A schedule over the run is as long as the run that resumes (the binary
    # fixes it when the run starts).
    config.update(
        num_steps=num_steps,
        schedule_steps=3,
        pooling="max",
        eval_every=2,
        checkpoint_every=1,
    )
    if name == "maml_plus_plus":
        config.update(
            inner_steps=2,
            eval_inner_steps=3,
            multi_step_loss_steps=0.5,
            running_statistics=True,
        )
    return config


def variables_of(workdir, config) -> list[np.ndarray]:
    learner, _ = restore_learner(str(workdir), config, "latest")
    state = [v.numpy() for v in learner.variables + learner.state_variables]
    state += [v.numpy() for v in learner.outer_optimizer.variables]
    return state


@pytest.mark.parametrize("name", ALGORITHMS)
def test_train_resume_export_serve(name, data_dir, tmp_path):
    # Resume: 2 steps, then on to 3, equals 3 steps in one go.
    once = train_workdir(tmp_path / "once", config_of(name, data_dir, 3))
    twice = tmp_path / "twice"
    train_workdir(twice, config_of(name, data_dir, 2))
    train_workdir(twice, config_of(name, data_dir, 3))
    config = config_of(name, data_dir, 3)
    uninterrupted, resumed = variables_of(once, config), variables_of(twice, config)
    assert len(uninterrupted) == len(resumed)
    for a, b in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(a, b)

    # Export and serve: the served answers are the in-memory learner's.
    result = export_workdir(str(once), str(tmp_path / "models" / name))
    served = tf.saved_model.load(result["path"])
    exported = type("Exported", (), {"workdir": once, "config": config})
    learner = in_memory_learner(exported)
    support_x, support_y, query_x = episode(seed=3, k_shot=2, queries=4)
    adapted = learner.adapt(tf.constant(support_x), tf.constant(support_y))
    expected = learner.predict(adapted, tf.constant(query_x), tf.constant(support_x))
    answer = served.signatures["adapt_and_predict"](
        support_x=tf.constant(support_x),
        support_y=tf.constant(support_y),
        query_x=tf.constant(query_x),
    )
    # Prototype logits are large (squared distances): float32 round-off scales.
    np.testing.assert_allclose(answer["logits"], expected, rtol=1e-5, atol=1e-4)
    # The image signature: decoded as the Omniglot loaders decode.
    rng = np.random.default_rng(4)
    images = [omniglot_png(rng) for _ in range(len(support_y) + 2)]
    decoded = tf.stack(
        [preprocess_omniglot_image(tf.constant(b), IMAGE_SIZE) for b in images]
    )
    support_images, query_images = decoded[: len(support_y)], decoded[len(support_y) :]
    adapted = learner.adapt(support_images, tf.constant(support_y))
    expected = learner.predict(adapted, query_images, support_images)
    by_images = served.signatures["adapt_and_predict_images"](
        support_images=tf.constant(images[: len(support_y)]),
        support_y=tf.constant(support_y),
        query_images=tf.constant(images[len(support_y) :]),
    )
    np.testing.assert_allclose(by_images["logits"], expected, rtol=1e-5, atol=1e-4)
