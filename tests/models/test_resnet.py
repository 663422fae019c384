"""ResNet-12: its shape, widths and seeding, the config path that builds it,
and a second-order MAML meta-gradient through it against finite differences
(with its residual additions and support-set statistics)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import (
    check_directional_derivatives,
    classification_task,
    floatx,
    query_loss_after_inner_loop,
    random_directions,
    seed_tensor,
)
from tfmeta.algorithms import MAML
from tfmeta.configs import build_learner, get_config
from tfmeta.models import MetaBatchNorm, resnet12
from tfmeta.models.resnet import resnet12_widths


def test_widths_shapes_and_layers():
    assert resnet12_widths(64) == (64, 160, 320, 640)
    assert resnet12_widths(4) == (4, 10, 20, 40)
    model = resnet12(5, input_shape=(28, 28, 1), filters=4, seed=0)
    assert model(tf.zeros([3, 28, 28, 1])).shape == (3, 5)
    # The embedding before the head: the last block's channels, averaged over space.
    assert model.layers[-2].output.shape == (None, 40)
    norms = [layer for layer in model.layers if isinstance(layer, MetaBatchNorm)]
    assert len(norms) == 16  # 3 on the main path and 1 on the shortcut, 4 blocks
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 16 and not any(layer.use_bias for layer in convs)
    # 28 -> 14 -> 7 -> 4 -> 2 before the spatial mean
    assert model.get_layer("block3_pool").output.shape == (None, 2, 2, 40)


@pytest.mark.parametrize("filters", [0, -3, 2.5, True])
def test_bad_width_is_refused(filters):
    with pytest.raises(ValueError, match="filters must be an integer >= 1"):
        resnet12(5, filters=filters)


def test_seeded_models_are_reproducible_and_seeds_differ():
    a, b = (resnet12(3, (12, 12, 1), filters=2, seed=3) for _ in range(2))
    c = resnet12(3, (12, 12, 1), filters=2, seed=4)
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert not np.array_equal(a.trainable_variables[0], c.trainable_variables[0])


@pytest.mark.parametrize("algorithm", ["protonet", "maml"])
def test_the_config_builds_it_and_a_meta_step_runs(algorithm):
    # Prototypical Networks train on 3-way episodes here (their config: 60).
    way = {"train_n_way": 3} if algorithm == "protonet" else {}
    config = get_config(
        algorithm,
        "omniglot",
        model="resnet12",
        filters=2,
        n_way=3,
        meta_batch_size=2,
        **way,
    )
    learner = build_learner(config, (12, 12, 1))
    assert learner.model.name == "resnet12"
    rng = np.random.default_rng(0)
    tasks = [
        classification_task(rng, shape=(12, 12, 1), dtype="float32") for _ in range(2)
    ]
    episode = tuple(tf.stack(parts) for parts in zip(*tasks))
    before = [v.numpy().copy() for v in learner.model.trainable_variables]
    out = learner.meta_train_step(episode)
    assert np.isfinite(float(out["loss"]))
    changed = [
        not np.array_equal(b, v.numpy())
        for b, v in zip(before, learner.model.trainable_variables)
    ]
    assert any(changed)


def test_bad_model_settings_are_one_line():
    with pytest.raises(ValueError, match="filters must be an integer >= 1"):
        get_config("protonet", "omniglot", model="resnet12", filters=0)
    with pytest.raises(ValueError, match="does not fit dataset=sinusoid"):
        get_config("maml", "sinusoid", model="resnet12")


def test_second_order_meta_gradient_matches_finite_differences():
    """Exact through the residual blocks and support-set statistics: the
    query loss after one inner step, along random directions, in float64."""
    with floatx("float64"):
        model = resnet12(3, input_shape=(16, 16, 1), filters=2, seed=1)
        learner = MAML(model, keras.optimizers.SGD(0.0), inner_lr=0.05, inner_steps=1)
        task = classification_task(np.random.default_rng(2), shape=(16, 16, 1))
        gradient = learner.meta_step.task(*task, seed_tensor()).meta_gradient
        check_directional_derivatives(
            learner,
            gradient,
            lambda: query_loss_after_inner_loop(learner, task, 1),
            random_directions(learner, 3, seed=4),
            # Small enough that no leaky ReLU or max pool switches branch
            # between the two sides (at 1e-5 some do, and the difference
            # is off by a kink's jump).
            epsilon=1e-7,
            rel=1e-6,
            abs=1e-8,
        )
