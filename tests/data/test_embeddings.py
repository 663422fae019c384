"""Embedding files in the LEO format: safe loading, grouping by class, episodes."""

import _codecs
import os
import pickle

import numpy as np
import pytest

from tfmeta.data import (
    episode_dataset,
    load_embedding_file,
    load_embedding_splits,
    write_embedding_file,
)
from tfmeta.data.embeddings import embeddings_to_classes


def fields(classes=3, per_class=4, dim=5, seed=0):
    """Keys '<n>-<class>-<image>' with classes interleaved, as in a shuffled file."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(classes * per_class)
    class_of = order % classes
    keys = [f"{n}-c{c}-c{c}_{n:03d}" for n, c in enumerate(class_of)]
    embeddings = rng.normal(size=(len(keys), dim)).astype(np.float32)
    return {"keys": np.array(keys), "embeddings": embeddings, "labels": class_of}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_every_protocol_load(tmp_path, protocol):
    raw = fields()
    path = tmp_path / "train_embeddings.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=protocol))
    loaded = load_embedding_file(str(path))
    np.testing.assert_array_equal(loaded["embeddings"], raw["embeddings"])
    assert list(loaded["keys"]) == list(raw["keys"])
    np.testing.assert_array_equal(loaded["labels"], raw["labels"])


def test_object_and_bytes_key_arrays_load(tmp_path):
    raw = fields()
    for keys in (raw["keys"].astype(object), np.char.encode(raw["keys"], "latin1")):
        path = tmp_path / "keys.pkl"
        path.write_bytes(pickle.dumps({**raw, "keys": keys}, protocol=2))
        assert list(load_embedding_file(str(path))["keys"]) == list(raw["keys"])


def test_npz_round_trip_and_grouping_by_class(tmp_path):
    raw = fields()
    path = str(tmp_path / "val_embeddings.npz")
    write_embedding_file(path, raw["keys"], raw["embeddings"], raw["labels"])
    classes = embeddings_to_classes(load_embedding_file(path))
    first_seen = list(dict.fromkeys(k.split("-")[1] for k in raw["keys"]))
    assert classes.class_names == tuple(first_seen)
    assert classes.image_shape == (5,)
    np.testing.assert_array_equal(classes.images_per_class, [4, 4, 4])
    for index, name in enumerate(classes.class_names):
        rows = raw["embeddings"][[k.split("-")[1] == name for k in raw["keys"]]]
        expected = rows / np.linalg.norm(rows, axis=1, keepdims=True)  # file order kept
        np.testing.assert_allclose(classes.images_of(index), expected, rtol=1e-6)
    unnormalized = embeddings_to_classes(load_embedding_file(path), l2_normalize=False)
    assert not np.allclose(np.linalg.norm(unnormalized.images, axis=1), 1.0)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "created_by_the_pickle"

    class Payload:
        def __reduce__(self):
            return (os.makedirs, (str(marker),))

    path = tmp_path / "train_embeddings.pkl"
    path.write_bytes(pickle.dumps({**fields(), "extra": Payload()}, protocol=4))
    with pytest.raises(
        pickle.UnpicklingError, match="refusing to load global 'os.makedirs'"
    ):
        load_embedding_file(str(path))
    assert not marker.exists()


def test_codecs_encode_is_limited_to_latin1(tmp_path):
    # Protocol-2 pickles store bytes as _codecs.encode(text, "latin1"); that
    # global may not pick another codec.
    class OtherCodec:
        def __reduce__(self):
            return (_codecs.encode, ("text", "rot13"))

    path = tmp_path / "train_embeddings.pkl"
    path.write_bytes(pickle.dumps({**fields(), "extra": OtherCodec()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="only latin-1"):
        load_embedding_file(str(path))


def test_bad_files_give_clear_errors(tmp_path):
    raw = fields()
    cases = [
        ([1, 2, 3], ValueError, "expected a dict"),
        (
            {"keys": raw["keys"]},
            ValueError,
            r"missing fields \['embeddings', 'labels'\]",
        ),
        (
            {**raw, "labels": raw["labels"][:3]},
            ValueError,
            "3 labels and 12 embeddings",
        ),
        ({**raw, "embeddings": raw["embeddings"][0]}, ValueError, r"numeric \[n, d\]"),
    ]
    path = tmp_path / "bad.pkl"
    for value, error, message in cases:
        path.write_bytes(pickle.dumps(value))
        with pytest.raises(error, match=message):
            load_embedding_file(str(path))
    path.write_bytes(pickle.dumps({**raw, "keys": np.array(["a-b"] * 12)}))
    with pytest.raises(
        ValueError, match="'a-b' is not of the form '<n>-<class>-<image>'"
    ):
        embeddings_to_classes(load_embedding_file(str(path)))
    with pytest.raises(
        FileNotFoundError, match="expected .*miniImageNet/center/train_embeddings.pkl"
    ):
        load_embedding_splits(str(tmp_path), "miniImageNet")


def test_splits_load_from_the_leo_layout_and_give_feature_episodes(tmp_path):
    folder = tmp_path / "toy" / "center"
    for index, split in enumerate(("train", "val", "test")):
        raw = fields(classes=6, per_class=5, seed=index)
        extension = "pkl" if split == "train" else "npz"
        write_embedding_file(
            str(folder / f"{split}_embeddings.{extension}"),
            raw["keys"],
            raw["embeddings"],
            raw["labels"],
        )
    splits = load_embedding_splits(str(tmp_path), "toy")
    train = splits["train"]
    episode = next(iter(episode_dataset(train, 3, 2, 3, meta_batch_size=2, seed=0)))
    assert episode.support_x.shape == (2, 6, 5) and episode.query_x.shape == (2, 9, 5)
    # every support and query vector is a row of the class its label names
    for task in range(2):
        chosen = []
        for label in range(3):
            rows = np.concatenate(
                [
                    episode.support_x[task][episode.support_y[task] == label],
                    episode.query_x[task][episode.query_y[task] == label],
                ]
            )
            owners = {
                int(np.argmax(np.all(np.isclose(train.images, row), axis=1)))
                for row in rows
            }
            classes = {
                int(np.searchsorted(train.class_offsets, o, side="right")) - 1
                for o in owners
            }
            assert len(classes) == 1 and len(owners) == 5
            chosen += classes
        assert len(set(chosen)) == 3
    with pytest.raises(ValueError, match="square images"):
        episode_dataset(train, 3, 2, 3, meta_batch_size=2, seed=0, rotations=True)
