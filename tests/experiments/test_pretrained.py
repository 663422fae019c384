"""A pretrained start: experiments.embed's backbone, loaded by image learners."""

import dataclasses
import json
import pathlib
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import checks, embed
from experiments.export import export_workdir
from tests.experiments.test_train import train_in_process
from tests.export import fake_omniglot, tiny_config
from tfmeta.configs.build import build_model
from tfmeta.data.tasks import task_sets
from tfmeta.models import conv4
from tfmeta.training import Workdir
from tfmeta.training import backbone as saved_backbone

# One worker computes the backbone (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("pretrained")


@dataclasses.dataclass(frozen=True)
class Backbone:
    data_dir: pathlib.Path
    output: pathlib.Path  # the embed --output_dir: backbone.weights.h5, backbone.json
    info: dict


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """embed on a fake Omniglot archive (30 characters of 8 drawings, split
    randomly 21/3/6 as tiny_config's runs) with tiny_config's conv4: 2 blocks
    of 8 filters, max-pooling."""
    data_dir = fake_omniglot(tmp_path_factory.mktemp("omniglot"), drawers=8)
    output = tmp_path_factory.mktemp("embedded")
    info = embed.write_embeddings(
        {
            "output_dir": str(output),
            "data_dir": str(data_dir),
            "embedding_dataset": "omniglot",
            "embedding_crop": "center",
            "split_protocol": "random",
            "split_seed": 0,
            "image_size": 28,
            "rotations": "train",
            "filters": 8,
            "depth": 2,
            "epochs": 1,
            "max_steps": 3,
            "batch_size": 32,
            "learning_rate": 1e-2,
            "augment": 0.0,
            "seed": 0,
            "format": "npz",
            "eval_tasks": 10,
        }
    )
    return Backbone(data_dir, output, info)


def run_config(backbone: Backbone, **overrides) -> dict:
    """tiny_config's MAML on the backbone's data, max-pooling, starting from it."""
    config = tiny_config("maml", "omniglot", str(backbone.data_dir))
    config.update(pooling="max", pretrained_backbone=str(backbone.output))
    config.update(overrides)
    return config


def run_flags(backbone: Backbone, workdir, *extra) -> list[str]:
    """run_config as the training binary's flags."""
    return [
        "--algorithm=maml",
        "--dataset=omniglot",
        f"--data_dir={backbone.data_dir}",
        "--n_way=3",
        "--k_shot=1",
        "--q_query=1",
        "--eval_q_query=2",
        "--rotations=none",
        "--split_protocol=random",
        "--filters=8",
        "--depth=2",
        "--pooling=max",
        "--meta_batch_size=2",
        "--val_tasks=2",
        "--test_tasks=2",
        "--eval_batch_size=2",
        "--log_every=1",
        "--eval_every=1",
        "--checkpoint_every=1",
        "--malloc_arenas=glibc",
        f"--workdir={workdir}",
        *extra,
    ]


def weights_of(layer) -> list[np.ndarray]:
    return [w.numpy() for w in layer.weights]


def test_as_conv4_computes_the_trained_classifier():
    """embed's network (conv without bias, Keras batch norm in training mode)
    and the conv4 it is saved as compute the same logits."""
    rng = np.random.default_rng(0)
    features = embed.backbone((28, 28, 1), filters=4, depth=2, seed=0)
    head = keras.layers.Dense(5, name="head")
    classifier = keras.Sequential([features, head])
    images = rng.random((6, 28, 28, 1)).astype(np.float32)
    classifier(images)  # builds it
    for block in range(2):
        norm = features.get_layer(f"norm{block}")
        for variable in norm.weights:  # gamma, beta and running averages
            variable.assign(rng.normal(size=variable.shape).astype(np.float32))
    model = embed.as_conv4(features, head)
    assert [layer.name for layer in model.layers if layer.weights] == [
        "conv0",
        "norm0",
        "conv1",
        "norm1",
        "head",
    ]
    assert not np.any(model.get_layer("conv0").bias.numpy())
    np.testing.assert_allclose(
        model(images), classifier(images, training=True), rtol=1e-4, atol=1e-5
    )


def test_embed_writes_a_conv4_and_the_split_it_saw(backbone):
    info = json.loads((backbone.output / saved_backbone.INFO_FILE).read_text())
    split = task_sets(run_config(backbone)).split
    assert {
        k: info[k] for k in (*saved_backbone.ARCHITECTURE, *saved_backbone.SPLIT)
    } == {
        "filters": 8,
        "depth": 2,
        "pooling": "max",
        "image_size": 28,
        "channels": 1,
        "dataset": "omniglot",
        "split_protocol": "random",
        "split_seed": 0,
    }
    assert info["data_source"] == split  # what experiments.train stores
    assert info["num_classes"] == 21 * 4  # the training characters and rotations
    assert backbone.info["backbone_weights"] == str(
        backbone.output / saved_backbone.WEIGHTS_FILE
    )
    # The promised form: plain Keras loads it into conv4(pooling="max").
    model = conv4(84, filters=8, depth=2, pooling="max", seed=5)
    model.load_weights(str(backbone.output / saved_backbone.WEIGHTS_FILE))
    saved = saved_backbone.saved_model(str(backbone.output))
    for ours, theirs in zip(model.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert not np.any(model.get_layer("conv1").bias.numpy())
    assert np.any(model.get_layer("norm1").gamma.numpy() != 1.0)  # trained


def test_maml_starts_from_the_backbone_with_a_fresh_head(backbone):
    config = run_config(backbone)
    checks.check_config(config)
    data = task_sets(config)
    config["data_source"] = data.split
    model = build_model(config, data.input_shape, pretrained=True)
    fresh = build_model(config, data.input_shape)  # evaluate, export
    saved = saved_backbone.saved_model(str(backbone.output))
    loaded = [layer.name for layer in model.layers if layer.weights]
    assert loaded == ["conv0", "norm0", "conv1", "norm1", "head"]
    for name in loaded[:-1]:
        for ours, theirs, initial in zip(
            weights_of(model.get_layer(name)),
            weights_of(saved.get_layer(name)),
            weights_of(fresh.get_layer(name)),
            strict=True,
        ):
            np.testing.assert_array_equal(ours, theirs)
            if name.startswith("conv") and ours.ndim > 1:  # kernels: not the init
                assert not np.array_equal(ours, initial)
    # The head: the run's 3-way head as seeded, not the saved 84-way one.
    head, initial = (
        weights_of(model.get_layer("head")),
        weights_of(fresh.get_layer("head")),
    )
    for ours, theirs in zip(head, initial, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert head[0].shape == (7 * 7 * 8, 3)
    assert saved.get_layer("head").kernel.shape == (7 * 7 * 8, 84)
    # The folder and the weights file name the same backbone.
    by_file = build_model(
        {
            **config,
            "pretrained_backbone": str(backbone.output / saved_backbone.WEIGHTS_FILE),
        },
        data.input_shape,
        pretrained=True,
    )
    for ours, theirs in zip(model.weights, by_file.weights, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def checkpoint_theta(path: str) -> dict[str, np.ndarray]:
    """The model variables and optimizer state of a checkpoint, by key."""
    reader = tf.train.load_checkpoint(path)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith(("model_variables", "optimizer"))
    }


def test_zero_steps_evaluate_and_export_the_pretrained_start(backbone, tmp_path):
    workdir = tmp_path / "run"
    train_in_process(
        *run_flags(backbone, workdir),
        "--num_steps=0",
        f"--pretrained_backbone={backbone.output}",
    )
    results = json.loads((workdir / "results.json").read_text())
    assert results["checkpoint_step"] == 0 and results["trained_steps"] == 0
    assert results["checkpoint"].endswith("best/ckpt-0")
    assert [e["num_tasks"] for e in results["evaluations"]] == [2]
    stored = Workdir(str(workdir)).read_config()
    assert stored["pretrained_backbone"] == str(backbone.output)
    assert stored["num_steps"] == 0
    # The step-0 checkpoint holds the pretrained start.
    config = {**run_config(backbone), "data_source": stored["data_source"]}
    start = build_model(config, (28, 28, 1), pretrained=True)
    theta = checkpoint_theta(str(workdir / "checkpoints" / "ckpt-0"))
    for index, variable in enumerate(start.variables):
        key = f"model_variables/{index}/.ATTRIBUTES/VARIABLE_VALUE"
        np.testing.assert_array_equal(theta[key], variable.numpy(), err_msg=key)
    exported = export_workdir(str(workdir), str(tmp_path / "models" / "pretrained"))
    assert exported["checkpoint"].endswith("best/ckpt-0")
    assert exported["metadata"]["checkpoint_step"] == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"filters": 16}, "filters is 8 in the backbone, expected the run's 16"),
        ({"depth": 3}, "depth is 2 in the backbone, expected the run's 3"),
        (
            {"pooling": "stride"},
            "pooling is 'max' in the backbone, expected the run's 'stride'",
        ),
        ({"image_size": 32}, "image_size is 28 in the backbone, expected the run's 32"),
        ({"split_seed": 1}, "split_seed is 0 in the backbone, expected the run's 1"),
        (
            {"split_protocol": "auto", "split_seed": 2},
            (
                "split_protocol is 'random' in the backbone, expected the run's 'auto'; "
                "split_seed is 0 in the backbone, expected the run's 2"
            ),
        ),
    ],
)
def test_a_backbone_of_another_architecture_or_split_is_refused(
    backbone, overrides, message
):
    with pytest.raises(ValueError) as error:
        checks.check_config(run_config(backbone, **overrides))
    text = str(error.value)
    assert text.startswith(f"pretrained_backbone {backbone.output} does not fit")
    assert message in text and "\n" not in text


def test_a_backbone_of_other_data_is_refused_when_loaded(backbone):
    config = run_config(backbone, data_source="random 70/10/20 split of other data")
    model = build_model(config, (28, 28, 1))
    before = weights_of(model)
    with pytest.raises(ValueError, match="data_source is 'random 70/10/20 split by"):
        saved_backbone.load_backbone(model, str(backbone.output), config)
    for ours, theirs in zip(weights_of(model), before, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # untouched


def test_missing_or_unreadable_backbones_are_refused(backbone, tmp_path):
    missing = tmp_path / "absent"
    with pytest.raises(ValueError) as error:
        checks.check_config(run_config(backbone, pretrained_backbone=str(missing)))
    assert str(error.value) == (
        f"pretrained_backbone {missing} does not exist (write one with python -m "
        "experiments.embed --output_dir=<folder>)"
    )
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(backbone.output / saved_backbone.WEIGHTS_FILE, alone)
    with pytest.raises(ValueError, match=r"no backbone\.json beside it"):
        checks.check_config(run_config(backbone, pretrained_backbone=str(alone)))
    (alone / saved_backbone.INFO_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"cannot read .*backbone\.json"):
        checks.check_config(run_config(backbone, pretrained_backbone=str(alone)))
    shutil.copy(backbone.output / saved_backbone.INFO_FILE, alone)
    (alone / saved_backbone.WEIGHTS_FILE).write_bytes(b"not HDF5")
    config = run_config(backbone, pretrained_backbone=str(alone))
    checks.check_config(config)  # the weights are read when loaded
    with pytest.raises(ValueError, match=r"alone: cannot load .*backbone\.weights\.h5"):
        build_model(config, (28, 28, 1), pretrained=True)
    (alone / saved_backbone.INFO_FILE).write_text('{"filters": 8}')
    with pytest.raises(ValueError, match="is not a backbone description"):
        checks.check_config(run_config(backbone, pretrained_backbone=str(alone)))
    with pytest.raises(ValueError, match="is a conv4 for images"):
        checks.check_config(
            {
                **tiny_config("maml", "sinusoid"),
                "pretrained_backbone": str(backbone.output),
            }
        )


def test_the_binary_refuses_a_bad_backbone_in_one_line_before_reading_data(
    backbone, tmp_path
):
    from absl import app

    workdir = tmp_path / "run"
    for flag, message in (
        ("--filters=16", "filters is 8 in the backbone, expected the run's 16"),
        (f"--pretrained_backbone={tmp_path / 'absent'}", "does not exist"),
    ):
        with pytest.raises(app.UsageError) as error:
            train_in_process(
                *run_flags(backbone, workdir),
                f"--pretrained_backbone={backbone.output}",
                flag,
                "--data_dir=/nonexistent",  # read after the check: not reached
            )
        assert str(error.value).startswith("--pretrained_backbone ")
        assert message in str(error.value) and "\n" not in str(error.value)
    assert not workdir.exists()


def test_a_resumed_run_keeps_its_trained_weights(backbone, tmp_path):
    """Resumed at step 2 after the backbone file changed, a run ends as one
    that never stopped: its checkpoint's theta, not the backbone, goes on."""
    copy = tmp_path / "backbone"
    shutil.copytree(backbone.output, copy, ignore=shutil.ignore_patterns("omniglot"))
    flags = [f"--pretrained_backbone={copy}", "--noevaluate"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train_in_process(*run_flags(backbone, straight), *flags, "--num_steps=4")
    train_in_process(*run_flags(backbone, stopped), *flags, "--num_steps=2")
    changed = saved_backbone.saved_model(str(copy))
    for variable in changed.weights:
        variable.assign(variable + 1.0)
    changed.save_weights(str(copy / saved_backbone.WEIGHTS_FILE))
    train_in_process(*run_flags(backbone, stopped), *flags, "--num_steps=4")
    ours = checkpoint_theta(str(stopped / "checkpoints" / "ckpt-4"))
    theirs = checkpoint_theta(str(straight / "checkpoints" / "ckpt-4"))
    assert sorted(ours) == sorted(theirs) and len(ours) > 10
    for key in ours:
        assert np.array_equal(ours[key], theirs[key]), key
