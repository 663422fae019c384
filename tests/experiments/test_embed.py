"""experiments.embed and the embeddings path of the training binary."""

import numpy as np
import pytest
import tensorflow as tf

from experiments import checks, embed
from tests.experiments.test_train import fake_omniglot
from tfmeta.algorithms import LEO, MAML
from tfmeta.configs import CONFIG_CHOICES, get_config
from tfmeta.configs.build import build_learner, build_model
from tfmeta.data import ClassImages, load_embedding_file
from tfmeta.data.augment import distort
from tfmeta.data.embeddings import class_of_key
from tfmeta.data.tasks import task_sets
from tfmeta.training import Trainer, evaluate

# One worker computes the written embeddings (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("embed")


def test_rotated_classes_are_the_rotated_images():
    images = np.random.default_rng(0).random((2, 3, 3, 1)).astype(np.float32)
    classes = ClassImages.from_list(["a", "b"], [images, images[::-1]])
    rotated = embed.with_rotations(classes)
    assert rotated.class_names == (
        "a",
        "a/rot90",
        "a/rot180",
        "a/rot270",
        "b",
        "b/rot90",
        "b/rot180",
        "b/rot270",
    )
    for quarter in range(4):
        np.testing.assert_array_equal(
            rotated.images_of(4 + quarter)[1, :, :, 0],
            np.rot90(images[0, :, :, 0], quarter),
        )


def test_keys_follow_the_leo_format_and_name_their_class():
    classes = ClassImages.from_list(
        ["Greek_(x)/character01", "N-Ko/character02"],
        [np.zeros((2, 1)), np.zeros((3, 1))],
    )
    keys, tokens = embed.split_keys(classes, "val")
    assert keys[0] == "0-val0000-val0000_000" and len(keys) == 5
    names = [tokens[class_of_key(k)] for k in keys]
    assert names == ["Greek_(x)/character01"] * 2 + ["N-Ko/character02"] * 3


def test_nearest_centroid_accuracy_on_separated_and_identical_classes():
    separated = ClassImages.from_list(
        [f"c{i}" for i in range(5)],
        [np.tile(np.eye(5)[i], (20, 1)) + 0.01 * i for i in range(5)],
    )
    assert embed.nearest_centroid_accuracy(separated, 5, 1, tasks=20, seed=0) == 1.0
    identical = ClassImages.from_list(
        [f"c{i}" for i in range(5)], [np.ones((20, 3))] * 5
    )
    # every distance ties, argmin picks label 0: exactly one query class in five
    accuracy = embed.nearest_centroid_accuracy(identical, 5, 1, tasks=20, seed=0)
    assert accuracy == pytest.approx(0.2)


def test_distorted_batches_are_the_seeded_distortions_of_the_same_batches():
    images = np.random.default_rng(0).random((12, 8, 8, 1)).astype(np.float32)
    classes = ClassImages.from_list(
        ["a", "b", "c"], [images[:4], images[4:8], images[8:]]
    )

    def batches(augment):
        dataset = embed.training_batches(classes, 5, seed=3, augment=augment)
        return [(x.numpy(), y.numpy()) for x, y in dataset.take(3)]

    plain, distorted = batches(0.0), batches(1.0)
    for step, ((x, y), (x_aug, y_aug)) in enumerate(zip(plain, distorted)):
        np.testing.assert_array_equal(y_aug, y)
        expected = distort(tf.constant(x), tf.constant([3, step], tf.int64), 1.0)
        np.testing.assert_array_equal(x_aug, expected.numpy())
        assert np.abs(x_aug - x).max() > 0.1  # each batch is distorted
    again = batches(1.0)
    for (x, _), (x_again, _) in zip(distorted, again):
        np.testing.assert_array_equal(x_again, x)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    fake_omniglot(root, alphabets=4, characters=5)
    output = tmp_path_factory.mktemp("embeddings")
    config = {
        "output_dir": str(output),
        "data_dir": str(root),
        "embedding_dataset": "omniglot",
        "embedding_crop": "center",
        "split_protocol": "auto",
        "split_seed": 0,
        "image_size": 28,
        "rotations": "train",
        "filters": 4,
        "depth": 2,
        "epochs": 1,
        "max_steps": 3,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "augment": 0.0,
        "seed": 0,
        "format": "pkl",
        "eval_tasks": 10,
    }
    return output, embed.write_embeddings(config)


def test_embed_writes_three_disjoint_splits_in_the_leo_layout(written):
    output, info = written
    folder = output / "omniglot" / "center"
    counts = {}
    for split in ("train", "val", "test"):
        fields = load_embedding_file(str(folder / f"{split}_embeddings.pkl"))
        assert fields["embeddings"].shape[1] == info["embedding_dim"] == 7 * 7 * 4
        classes = {class_of_key(k) for k in fields["keys"]}
        assert classes == set(info["classes"][split])
        counts[split] = len(classes)
    # 20 characters split 14/2/4; the training classes with 3 rotations each
    assert counts == {"train": 56, "val": 2, "test": 4}
    characters = {
        split: {name.split("/rot")[0] for name in info["classes"][split].values()}
        for split in ("train", "val", "test")
    }
    assert not characters["train"] & (characters["val"] | characters["test"])
    assert not characters["val"] & characters["test"]
    assert (folder / "embedding_info.json").exists()


def test_leo_and_linear_maml_train_on_the_written_embeddings(written, tmp_path):
    output, info = written
    overrides = {
        "data_dir": str(output),
        "n_way": 2,
        "q_query": 2,
        "eval_q_query": 3,
        "meta_batch_size": 2,
        "inner_steps": 1,
        "eval_inner_steps": 1,
        "val_tasks": 0,
        "test_tasks": 4,
        "num_latents": 4,
    }
    for algorithm, learner_class in (("leo", LEO), ("maml", MAML)):
        config = get_config(algorithm, "embeddings")
        config.update(overrides)
        checks.check_config(config)
        data = task_sets(config)
        assert data.input_shape == (info["embedding_dim"],)
        learner = build_learner(config, build_model(config, data.input_shape))
        assert isinstance(learner, learner_class)
        workdir = tmp_path / algorithm
        Trainer(learner, str(workdir), data.train, print_fn=lambda line: None).train(2)
        result = evaluate(learner, data.test())
        assert result["num_tasks"] == 4 and 0.0 <= result["mean"] <= 1.0
    linear = learner.model
    assert [layer.name for layer in linear.layers] == ["embedding", "head"]
    assert linear.trainable_variables[0].shape == (info["embedding_dim"], 2)


def test_nearest_centroid_on_the_written_embeddings_is_the_cosine_rule(
    written, tmp_path
):
    output, _ = written
    config = get_config("nearest_centroid", "embeddings")
    config.update(
        data_dir=str(output), n_way=2, eval_q_query=3, val_tasks=0, test_tasks=6
    )
    checks.check_config(config)
    data = task_sets(config)
    learner = build_learner(config, data.input_shape)
    Trainer(learner, str(tmp_path), data.train, print_fn=lambda line: None).train(1)
    expected = []
    for episode in data.test().as_numpy_iterator():
        for sx, sy, qx, qy in zip(
            episode.support_x, episode.support_y, episode.query_x, episode.query_y
        ):
            prototypes = np.stack([sx[sy == c].mean(axis=0) for c in range(2)])
            prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
            queries = qx / np.linalg.norm(qx, axis=1, keepdims=True)
            expected.append(np.mean(np.argmax(queries @ prototypes.T, axis=1) == qy))
    result = evaluate(learner, data.test())
    assert len(expected) == result["num_tasks"] == 6
    assert result["mean"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert 0.0 < result["mean"] < 1.0  # the fake images leave the rule room to err


def test_named_leo_configs_carry_the_reference_readme_values():
    config = get_config("leo", "embeddings", "leo_miniimagenet_1shot")
    assert config["outer_lr"] == 2.739071e-4 and config["kl_weight"] == 0.756143
    assert config["embedding_dataset"] == "miniImageNet" and config["k_shot"] == 1
    assert config["eval_q_query"] == 599 and config["gradient_clip_value"] == 0.1
    tiered = get_config("leo", "embeddings", "leo_tieredimagenet_5shot")
    assert tiered["dropout_rate"] == 0.415158 and tiered["eval_q_query"] == 595
    for name in CONFIG_CHOICES[("leo", "embeddings")]:
        named = get_config("leo", "embeddings", name)
        dataset = named["embedding_dataset"] or "miniImageNet"  # leo_reference: a flag
        checks.check_config(
            {**named, "data_dir": "/embeddings", "embedding_dataset": dataset}
        )
        assert named["algorithm"] == "leo" and named["model"] == "leo"
    with pytest.raises(ValueError, match="unknown config 'leo_cifar'"):
        get_config("leo", "embeddings", "leo_cifar")


@pytest.mark.parametrize(
    "algorithm, dataset, overrides, message",
    [
        ("leo", "embeddings", {"data_dir": ""}, "needs --data_dir=<root>"),
        (
            "maml",
            "embeddings",
            {"data_dir": "/e", "rotations": "train"},
            "rotations=none",
        ),
        ("maml", "embeddings", {"data_dir": "/e", "model": "conv4"}, "does not fit"),
        ("maml", "omniglot", {"model": "linear"}, "does not fit"),
        (
            "leo",
            "embeddings",
            {"data_dir": "/e", "task_weighting": "gradient_agreement"},
            "uniform",
        ),
        ("leo", "embeddings", {"data_dir": "/e", "dropout_rate": 1.0}, "dropout_rate"),
    ],
)
def test_bad_embedding_settings_are_refused(algorithm, dataset, overrides, message):
    config = get_config(algorithm, dataset)
    config.update(overrides)
    with pytest.raises(ValueError, match=message):
        checks.check_config(config)


def test_leo_needs_the_embeddings_dataset():
    with pytest.raises(ValueError, match="does not run on --dataset=omniglot"):
        get_config("leo", "omniglot")


def test_a_file_on_the_way_to_the_embeddings_is_named_before_reading_data(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    config = {
        "output_dir": str(taken / "sub"),
        "data_dir": str(tmp_path / "absent"),
        "embedding_dataset": "omniglot",
        "embedding_crop": "center",
    }
    with pytest.raises(NotADirectoryError) as error:
        embed.write_embeddings(config)
    assert str(error.value) == (
        f"--output_dir={taken / 'sub'}: {taken} is a file, not a folder"
    )
    assert taken.read_text() == "a file"
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "omniglot").write_text("")
    with pytest.raises(NotADirectoryError, match="out/omniglot is a file"):
        embed.write_embeddings({**config, "output_dir": str(tmp_path / "out")})
