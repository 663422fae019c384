"""Tests of split_omniglot / describe_split on synthetic characters with 1x1 images."""

import numpy as np
import pytest

from tfmeta.data import OmniglotCharacter, describe_split, split_omniglot


def _characters(
    alphabets_by_source: dict[str, dict[str, int]],
) -> list[OmniglotCharacter]:
    """Characters whose two 1x1 images hold a unique id: 1000 * number + [0, 1]."""
    records = []
    for source, alphabets in alphabets_by_source.items():
        for alphabet, count in alphabets.items():
            for c in range(1, count + 1):
                value = 1000.0 * len(records)
                images = np.array([value, value + 1], np.float32).reshape(2, 1, 1, 1)
                records.append(
                    OmniglotCharacter(alphabet, f"character{c:02d}", source, images)
                )
    return records


def _by_name(characters):
    return {r.name: r for r in characters}


def _check_split(characters, splits):
    """Disjoint splits covering the characters, with each class's own images."""
    names = {k: list(v.class_names) for k, v in splits.items()}
    for k, v in names.items():
        assert v == sorted(v), k
    all_names = names["train"] + names["val"] + names["test"]
    assert len(all_names) == len(set(all_names)) == len(characters)
    records = _by_name(characters)
    for classes in splits.values():
        for index, name in enumerate(classes.class_names):
            np.testing.assert_array_equal(
                classes.images_of(index), records[name].images
            )
    return names


MINIMAL = _characters(
    {"small1": {"Balinese": 24, "Greek": 24, "Korean": 40, "Latin": 26, "Early_Aramaic": 22},
     "small2": {"Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}}
)  # fmt: skip


def test_random_split_sizes_follow_fractions_and_description():
    assert len(MINIMAL) == 242
    splits = split_omniglot(MINIMAL, protocol="random", seed=0)
    names = _check_split(MINIMAL, splits)
    assert [len(names[k]) for k in ("train", "val", "test")] == [169, 24, 49]
    assert describe_split(MINIMAL, "random", 0) == (
        "random 70/10/20 split by character over 242 characters (seed 0): 169/24/49"
    )
    # Auto picks random without the background and evaluation sets.
    assert describe_split(MINIMAL) == describe_split(MINIMAL, "random")
    other = split_omniglot(
        MINIMAL, protocol="random", seed=0, fractions=(0.5, 0.25, 0.25)
    )
    assert [other[k].num_classes for k in ("train", "val", "test")] == [121, 61, 60]


def test_random_split_is_deterministic_and_seed_dependent():
    first = split_omniglot(MINIMAL, "random", seed=3)
    # Input order does not matter: characters are sorted first.
    again = split_omniglot(list(reversed(MINIMAL)), "random", seed=3)
    other = split_omniglot(MINIMAL, "random", seed=4)
    for k in ("train", "val", "test"):
        assert first[k].class_names == again[k].class_names
        np.testing.assert_array_equal(first[k].images, again[k].images)
    assert first["test"].class_names != other["test"].class_names


def test_random_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match=r"summing to 1, got \(0.5, 0.5, 0.5\)"):
        split_omniglot(MINIMAL, "random", fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="leaves val empty"):
        split_omniglot(MINIMAL[:3], "random")
    with pytest.raises(ValueError, match="protocol must be one of"):
        split_omniglot(MINIMAL, "lake_maml")


FULL_LIKE = _characters(
    {"background": {"Alpha": 12, "Beta": 10, "Gamma": 8},
     "evaluation": {"Delta": 11, "Epsilon": 9}}
)  # fmt: skip


def test_lake_split_holds_out_background_characters_and_tests_on_evaluation():
    splits = split_omniglot(FULL_LIKE, protocol="lake", seed=0)
    names = _check_split(FULL_LIKE, splits)
    sources = {r.name: r.source for r in FULL_LIKE}
    assert {sources[n] for n in names["train"] + names["val"]} == {"background"}
    assert {sources[n] for n in names["test"]} == {"evaluation"}
    assert [len(names[k]) for k in ("train", "val", "test")] == [27, 3, 20]
    assert (
        describe_split(FULL_LIKE)
        == describe_split(FULL_LIKE, "lake")
        == (
            "lake split (Lake et al., 2015): 30 background characters (3 alphabets) -> 27 train "
            "/ 3 val (10% of characters held out, seed 0); 20 evaluation characters "
            "(2 alphabets) -> test"
        )
    )
    other = split_omniglot(FULL_LIKE, protocol="lake", seed=1)
    assert other["test"].class_names == splits["test"].class_names
    assert other["val"].class_names != splits["val"].class_names


def test_lake_split_names_the_missing_archive():
    background_only = [r for r in FULL_LIKE if r.source == "background"]
    with pytest.raises(ValueError, match="missing: evaluation") as error:
        split_omniglot(background_only, protocol="lake")
    assert "images_evaluation.zip" in str(error.value)
    with pytest.raises(ValueError, match="missing: background, evaluation"):
        split_omniglot(MINIMAL, protocol="lake")


def test_maml_split_sizes_on_1623_characters():
    characters = _characters({"background": {f"A{i:02d}": 32 for i in range(30)} | {"Z": 4},
                              "evaluation": {f"E{i:02d}": 31 for i in range(20)} | {"Y": 39}})  # fmt: skip
    assert len(characters) == 1623
    splits = split_omniglot(characters, protocol="maml", seed=0)
    names = _check_split(characters, splits)
    assert [len(names[k]) for k in ("train", "val", "test")] == [1100, 100, 423]
    assert describe_split(characters, "maml", 0).endswith(
        "shuffled with seed 0: 1100/100/423"
    )
    again = split_omniglot(characters, protocol="maml", seed=0)
    assert again["val"].class_names == splits["val"].class_names
    # Train draws from both background and evaluation alphabets (a shuffle of all).
    sources = {r.name: r.source for r in characters}
    assert {sources[n] for n in names["train"]} == {"background", "evaluation"}
    with pytest.raises(ValueError, match="at least 1200 characters.*got 1199"):
        split_omniglot(characters[:1199], protocol="maml")
