"""Tests of split_omniglot / describe_split on synthetic characters with 1x1 images."""

import os
import pathlib
import tempfile

import numpy as np
import pytest

from tfmeta.data import (
    OmniglotCharacter,
    alphabets_of,
    check_tasks_within_alphabet,
    describe_split,
    split_omniglot,
)
from tfmeta.data.alphabet_split import minimal_split_choices


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


# --- whole alphabets held out ----------------------------------------------------------

MINIMAL_COUNTS = {"Balinese": 24, "Early_Aramaic": 22, "Greek": 24, "Japanese_(katakana)": 47,
                  "Korean": 40, "Latin": 26, "Sanskrit": 42, "Tagalog": 17}  # fmt: skip
MINIMAL_SPLIT = {
    "train": {"Early_Aramaic", "Japanese_(katakana)", "Korean", "Sanskrit", "Tagalog"},
    "val": {"Balinese"},
    "test": {"Greek", "Latin"},
}
MINIMAL_DESCRIPTION = (
    "alphabet split (whole alphabets, fixed alphabets of the two minimal sets): "
    "train 168 characters (Early_Aramaic 22, Japanese_(katakana) 47, Korean 40, "
    "Sanskrit 42, Tagalog 17); val 24 characters (Balinese 24); test 50 characters "
    "(Greek 24, Latin 26)"
)


def _alphabets(names):
    return {name.split("/")[0] for name in names}


def _check_whole_alphabets(characters, splits):
    """Disjoint splits of whole alphabets, every val and test alphabet of >= 20 characters."""
    names = _check_split(characters, splits)
    alphabets = {k: _alphabets(v) for k, v in names.items()}
    assert not alphabets["train"] & alphabets["val"]
    assert not (alphabets["train"] | alphabets["val"]) & alphabets["test"]
    counts = {}
    for r in characters:
        counts[r.alphabet] = counts.get(r.alphabet, 0) + 1
    for k, v in names.items():
        # Whole alphabets: every character of a split's alphabets is in the split.
        assert len(v) == sum(counts[a] for a in alphabets[k]), k
    assert len(alphabets["test"]) >= 2 and len(alphabets["val"]) >= 1
    assert min(counts[a] for a in alphabets["test"] | alphabets["val"]) >= 20
    return alphabets


def test_alphabet_split_of_the_minimal_sets_is_fixed():
    assert {r.alphabet for r in MINIMAL} == set(MINIMAL_COUNTS)
    splits = split_omniglot(MINIMAL, protocol="alphabet", seed=0)
    assert _check_whole_alphabets(MINIMAL, splits) == MINIMAL_SPLIT
    assert [splits[k].num_classes for k in ("train", "val", "test")] == [168, 24, 50]
    assert describe_split(MINIMAL, "alphabet", seed=0) == MINIMAL_DESCRIPTION
    # The input order does not change it.
    again = split_omniglot(list(reversed(MINIMAL)), protocol="alphabet", seed=0)
    for k in ("train", "val", "test"):
        assert again[k].class_names == splits[k].class_names
        np.testing.assert_array_equal(again[k].images, splits[k].images)


def test_other_seeds_give_seeded_splits_of_the_minimal_sets():
    """Greek and Latin (near-copies) train together; test two and val one of
    the other alphabets of >= 20 characters, test 40-66 characters, train
    >= 130; seed 1's split as documented; the input order changes nothing."""
    choices = minimal_split_choices(MINIMAL_COUNTS)
    assert len(choices) == 14
    for choice in choices:
        assert {"Greek", "Latin", "Tagalog"} <= set(choice["train"])
        assert 40 <= sum(MINIMAL_COUNTS[a] for a in choice["test"]) <= 66
        assert sum(MINIMAL_COUNTS[a] for a in choice["train"]) >= 130
    seen = set()
    for seed in range(1, 6):
        splits = split_omniglot(MINIMAL, protocol="alphabet", seed=seed)
        alphabets = _check_whole_alphabets(MINIMAL, splits)
        assert {k: sorted(v) for k, v in alphabets.items()} in choices
        seen.add(tuple(sorted(alphabets["test"])))
        again = split_omniglot(list(reversed(MINIMAL)), protocol="alphabet", seed=seed)
        assert all(again[k].class_names == splits[k].class_names for k in splits)
    assert len(seen) > 1 and ("Greek", "Latin") not in seen
    first = _check_whole_alphabets(
        MINIMAL, split_omniglot(MINIMAL, protocol="alphabet", seed=1)
    )
    assert first == {
        "train": {"Greek", "Japanese_(katakana)", "Korean", "Latin", "Tagalog"},
        "val": {"Early_Aramaic"},
        "test": {"Balinese", "Sanskrit"},
    }
    assert describe_split(MINIMAL, "alphabet", seed=1) == (
        "alphabet split (whole alphabets, the minimal sets' split of seed 1: Greek "
        "and Latin train, test and val drawn among 14 choices): train 154 "
        "characters (Greek 24, Japanese_(katakana) 47, Korean 40, Latin 26, "
        "Tagalog 17); val 22 characters (Early_Aramaic 22); test 66 characters "
        "(Balinese 24, Sanskrit 42)"
    )


TEN_ALPHABETS = _characters({"background": {f"A{i}": 20 + 2 * i for i in range(8)} | {"S1": 12, "S2": 15}})  # fmt: skip


def test_alphabet_split_of_other_data_is_seeded():
    total = len(TEN_ALPHABETS)
    first = split_omniglot(TEN_ALPHABETS, protocol="alphabet", seed=0)
    alphabets = _check_whole_alphabets(TEN_ALPHABETS, first)
    # Alphabets of fewer than 20 characters train; test holds >= 20% of the
    # characters, val >= 10%.
    assert {"S1", "S2"} <= alphabets["train"]
    assert first["test"].num_classes >= 0.2 * total
    assert first["val"].num_classes >= 0.1 * total
    again = split_omniglot(list(reversed(TEN_ALPHABETS)), protocol="alphabet", seed=0)
    assert all(again[k].class_names == first[k].class_names for k in first)
    tests = set()
    for seed in range(1, 6):
        other = split_omniglot(TEN_ALPHABETS, protocol="alphabet", seed=seed)
        tests.add(tuple(sorted(_check_whole_alphabets(TEN_ALPHABETS, other)["test"])))
    assert len(tests | {tuple(sorted(alphabets["test"]))}) > 1
    text = describe_split(TEN_ALPHABETS, "alphabet", seed=0)
    assert text.startswith(
        "alphabet split (whole alphabets, alphabets of >= 20 characters drawn with seed 0"
    )
    for a in alphabets["val"] | alphabets["test"]:
        assert f"{a} {sum(r.alphabet == a for r in TEN_ALPHABETS)}" in text


def test_alphabet_split_needs_three_alphabets_of_20_characters():
    two_large = _characters({"background": {"A": 20, "B": 25, "C": 19, "D": 12}})
    with pytest.raises(
        ValueError,
        match=r"needs 3 alphabets of >= 20 characters \(2 test, 1 val\) and more "
        r"alphabets for train, got 2 of 4 alphabets with >= 20 characters\.$",
    ):
        split_omniglot(two_large, protocol="alphabet")
    three_large = _characters({"background": {"A": 20, "B": 25, "C": 30}})
    with pytest.raises(ValueError, match="got 3 of 3 alphabets"):
        split_omniglot(three_large, protocol="alphabet")
    # Test leaves an alphabet of >= 20 characters for val, even below 20% of
    # the characters: 40 or 60 of 250 or 270.
    small = {f"S{i}": 19 for i in range(10)}
    for large, sizes in (("ABC", [20, 40]), ("ABCD", [20, 60])):
        characters = _characters({"background": dict.fromkeys(large, 20) | small})
        splits = split_omniglot(characters, "alphabet")
        _check_whole_alphabets(characters, splits)
        assert [splits[k].num_classes for k in ("val", "test")] == sizes


def test_tasks_within_alphabet_need_an_alphabet_of_n_way_characters():
    splits = split_omniglot(MINIMAL, protocol="alphabet")
    assert alphabets_of(splits["test"]) == ("Greek",) * 24 + ("Latin",) * 26
    check_tasks_within_alphabet(splits["test"], 26, split="test")
    with pytest.raises(
        ValueError,
        match=r"^val split: 25-way tasks within one alphabet need an alphabet of >= 25 "
        r"classes; the largest, Balinese, has 24; expected n_way <= 24\.$",
    ):
        check_tasks_within_alphabet(splits["val"], 25, split="val")
    # Tagalog's 17 characters give no 20-way task, but 68 rotated classes do.
    tagalog = split_omniglot(
        [r for r in MINIMAL if r.alphabet == "Tagalog"], "random", fractions=(1, 0, 0)
    )["train"]
    with pytest.raises(ValueError, match="the largest, Tagalog, has 17; expected"):
        check_tasks_within_alphabet(tagalog, 20, split="train")
    check_tasks_within_alphabet(tagalog, 20, rotations=True, split="train")
    with pytest.raises(ValueError, match=r"has 68 \(17 characters x 4 rotations\)"):
        check_tasks_within_alphabet(tagalog, 69, rotations=True, split="train")


def test_alphabet_split_of_the_real_minimal_sets():
    from tests.helpers import REPO
    from tfmeta.data import load_omniglot_folder

    source = pathlib.Path(
        os.environ.get("TFMETA_OMNIGLOT_DIR")
        or REPO.parent / "shared" / "data" / "omniglot"
    )
    zips = ("images_background_small1.zip", "images_background_small2.zip")
    if not all((source / name).is_file() for name in zips):
        pytest.skip(
            f"Omniglot minimal sets {zips} not found in {source}; set "
            "TFMETA_OMNIGLOT_DIR to a folder holding them to run this test."
        )
    with tempfile.TemporaryDirectory() as folder:
        for name in zips:  # only the minimal sets, whatever else the folder holds
            (pathlib.Path(folder) / name).symlink_to((source / name).resolve())
        characters = load_omniglot_folder(folder, image_size=8)
    counts = {a: sum(r.alphabet == a for r in characters) for a in MINIMAL_COUNTS}
    assert counts == MINIMAL_COUNTS and len(characters) == 242
    splits = split_omniglot(characters, protocol="alphabet")
    assert _check_whole_alphabets(characters, splits) == MINIMAL_SPLIT
    assert describe_split(characters, "alphabet") == MINIMAL_DESCRIPTION
    assert all(len(r.images) == 20 for r in characters)
