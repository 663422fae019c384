"""The alphabet protocol through the binaries' data path: whole alphabets held
out, every train, val and test task within one alphabet (a fake Omniglot with
the minimal sets' alphabets and character counts)."""

import json
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from experiments import checks
from tests.data.test_omniglot_split import (
    MINIMAL_COUNTS,
    MINIMAL_DESCRIPTION,
    MINIMAL_SPLIT,
)
from tfmeta.configs import get_config
from tfmeta.data import load_omniglot_folder
from tfmeta.data.tasks import task_sets, tasks_within_alphabet

# One worker computes the Omniglot-like archive (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("alphabet_protocol")

DRAWERS, IMAGE_SIZE = 3, 8


@pytest.fixture(scope="module")
def minimal_like(tmp_path_factory):
    """(folder, {image bytes: ("Alphabet/characterNN", quarter turns)})."""
    root = tmp_path_factory.mktemp("omniglot")
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(root / "images_background_small1.zip", "w") as archive:
        for alphabet, count in MINIMAL_COUNTS.items():
            for c in range(1, count + 1):
                for d in range(1, DRAWERS + 1):
                    pixels = rng.random((IMAGE_SIZE, IMAGE_SIZE, 1)) > 0.3
                    name = f"images_background_small1/{alphabet}/character{c:02d}/{c:02d}_{d:02d}.png"
                    archive.writestr(
                        name, tf.io.encode_png(pixels.astype(np.uint8) * 255).numpy()
                    )
    names = {}
    for record in load_omniglot_folder(root, image_size=IMAGE_SIZE):
        for image in record.images:
            for k in range(4):
                rotated = np.ascontiguousarray(np.rot90(image, k))
                names[rotated.tobytes()] = (record.name, k)
    assert len(names) == 4 * DRAWERS * sum(MINIMAL_COUNTS.values())
    return root, names


def _config(data_dir, **overrides):
    config = get_config("maml", "omniglot", "maml_omniglot:20way")
    config.update(
        data_dir=str(data_dir),
        split_protocol="alphabet",
        image_size=IMAGE_SIZE,
        k_shot=1,
        q_query=1,
        eval_q_query=2,
        meta_batch_size=2,
        val_tasks=4,
        test_tasks=4,
        eval_batch_size=2,
    )
    config.update(overrides)
    checks.check_config(config)
    return config


def _task_alphabets(dataset, names, rotations=False, n_way=20):
    """The alphabets of each task's classes, checking one class per label
    (a character, with rotations a character and its quarter turns)."""
    tasks = []
    for episode in dataset.as_numpy_iterator():
        for support, labels in zip(episode.support_x, episode.support_y):
            assert labels.tolist() == list(range(n_way))
            classes = [names[image.tobytes()] for image in support]
            assert len(set(classes)) == n_way
            assert rotations or {k for _, k in classes} == {0}
            tasks.append({name.split("/")[0] for name, _ in classes})
    return tasks


def _arrays(dataset):
    return [np.asarray(e.query_x) for e in dataset.as_numpy_iterator()]


def test_alphabet_split_with_20_way_tasks_within_one_alphabet(minimal_like):
    data_dir, names = minimal_like
    data = task_sets(_config(data_dir))
    assert data.split == MINIMAL_DESCRIPTION
    assert "every task's classes from one alphabet (train, val and test)" in (
        data.description
    )
    # Rotations as new classes in training (the MAML setup) stay in the alphabet:
    # Tagalog's 68 rotated classes give 20-way tasks too.
    train = _task_alphabets(data.train(0).take(8), names, rotations=True)
    assert all(len(a) == 1 for a in train)
    assert set().union(*train) <= MINIMAL_SPLIT["train"]
    assert len(set().union(*train)) > 1
    val = _task_alphabets(data.val(), names)
    assert val == [{"Balinese"}] * 4
    test = _task_alphabets(data.test(), names)
    assert len(test) == 4 and all(len(a) == 1 for a in test)
    assert set().union(*test) <= MINIMAL_SPLIT["test"]
    # What evaluate reports each test alphabet's figure by: the tasks' own.
    assert data.test_groups() == [a for (a,) in test]
    # The validation and test tasks are fixed: the same on every call.
    for make in (data.val, data.test):
        first, again = _arrays(make()), _arrays(make())
        assert len(first) == len(again) == 2
        for x, y in zip(first, again):
            np.testing.assert_array_equal(x, y)


def test_tasks_within_alphabet_can_be_turned_off(minimal_like):
    data_dir, names = minimal_like
    data = task_sets(_config(data_dir, tasks_within_alphabet=False, rotations="none"))
    assert "one alphabet" not in data.description
    assert data.test_groups is None
    train = _task_alphabets(data.train(0).take(2), names)
    assert any(len(a) > 1 for a in train)  # 20 of 168 characters mix alphabets


def test_impossible_n_way_is_one_clear_error_before_training(minimal_like):
    data_dir, _ = minimal_like
    with pytest.raises(
        ValueError,
        match=r"^val split: 25-way tasks within one alphabet need an alphabet of >= 25 "
        r"classes; the largest, Balinese, has 24; expected n_way <= 24\.$",
    ):
        task_sets(_config(data_dir, n_way=25))


def test_bad_settings_are_refused_before_data_is_read():
    config = get_config("maml", "folder")
    config.update(data_dir="/nowhere", tasks_within_alphabet=True)
    with pytest.raises(
        ValueError,
        match=r"^tasks_within_alphabet needs --dataset=omniglot .*got --dataset=folder$",
    ):
        checks.check_config(config)
    config = get_config("maml", "omniglot")
    config["split_protocol"] = "alphabets"
    with pytest.raises(
        ValueError, match=r"^--split_protocol must be one of .*got 'alphabets'$"
    ):
        checks.check_config(config)
    # By default tasks are within one alphabet exactly with the alphabet split.
    assert not tasks_within_alphabet(get_config("maml", "omniglot"))
    config["split_protocol"] = "alphabet"
    assert tasks_within_alphabet(config)
    assert not tasks_within_alphabet(config | {"dataset": "folder"})


def test_tasks_within_one_alphabet_on_embeddings_of_the_alphabet_split(
    minimal_like, tmp_path
):
    from experiments import embed
    from tfmeta.data import load_embedding_splits

    data_dir, _ = minimal_like
    output = tmp_path / "embeddings"
    embed.write_embeddings(
        {
            "output_dir": str(output),
            "data_dir": str(data_dir),
            "embedding_dataset": "omniglot",
            "embedding_crop": "center",
            "split_protocol": "alphabet",
            "split_seed": 0,
            "image_size": IMAGE_SIZE,
            "rotations": "train",
            "filters": 2,
            "depth": 2,
            "epochs": 1,
            "max_steps": 1,
            "batch_size": 64,
            "learning_rate": 1e-3,
            "augment": 0.0,
            "seed": 0,
            "format": "npz",
            "eval_tasks": 2,
        }
    )
    info = json.loads(
        (output / "omniglot" / "center" / "embedding_info.json").read_text()
    )
    alphabet_of = {}  # an embedding's bytes -> its class's alphabet
    for split, classes in load_embedding_splits(str(output), "omniglot").items():
        for index, token in enumerate(classes.class_names):
            for vector in classes.images_of(index):
                alphabet_of[vector.tobytes()] = info["classes"][split][token].split(
                    "/"
                )[0]
    config = get_config("maml", "embeddings")
    config.update(
        data_dir=str(output),
        tasks_within_alphabet=True,
        n_way=20,
        k_shot=1,
        q_query=1,
        eval_q_query=2,
        meta_batch_size=2,
        val_tasks=2,
        test_tasks=2,
        eval_batch_size=2,
    )
    checks.check_config(config)
    data = task_sets(config)
    for dataset, alphabets in (
        (data.train(0).take(3), MINIMAL_SPLIT["train"]),
        (data.val(), {"Balinese"}),
        (data.test(), MINIMAL_SPLIT["test"]),
    ):
        for episode in dataset.as_numpy_iterator():
            for support in episode.support_x:
                task = {alphabet_of[vector.tobytes()] for vector in support}
                assert len(task) == 1 and task <= alphabets
    # Without the file that names each class, one line says what is missing.
    (output / "omniglot" / "center" / "embedding_info.json").unlink()
    with pytest.raises(FileNotFoundError, match="needs .*embedding_info.json"):
        task_sets(config)
