"""Whole Omniglot alphabets held out for validation and test (the "alphabet"
protocol of `split_omniglot`), and the alphabet of each class of a split, for
tasks whose classes all come from one alphabet, as in the one-shot
classification of Lake et al. (2015).

On the two minimal background sets (242 characters, 8 alphabets) split seed
0 gives the fixed split (`MINIMAL_ALPHABETS`):

  train  Early_Aramaic 22, Japanese_(katakana) 47, Korean 40, Sanskrit 42,
         Tagalog 17 (168 characters)
  val    Balinese 24
  test   Greek 24, Latin 26 (50 characters)

the sizes of the random character split (169/24/49). Greek and Latin share
many letter forms (A/alpha, B/beta, E/epsilon, ...), so both go to test: no
test character has a near-copy among the training characters. Tagalog (17
characters) cannot give 20-way tasks within one alphabet and trains.

Any other split seed gives a second split of the minimal sets, so that a
change is not tuned to Greek and Latin: Greek and Latin train (together,
being near-copies), and test takes two and val one of the other five
alphabets of at least 20 characters, drawn with the seed among the choices
whose test holds 40 to 66 characters (the fixed split's 50 within a third)
and whose train keeps at least 130 (`minimal_split_choices`).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

from tfmeta.data.class_images import ClassImages
from tfmeta.data.omniglot import OmniglotCharacter

MINIMAL_ALPHABETS = {
    "train": (
        "Early_Aramaic",
        "Japanese_(katakana)",
        "Korean",
        "Sanskrit",
        "Tagalog",
    ),
    "val": ("Balinese",),
    "test": ("Greek", "Latin"),
}
# Val and test alphabets give 20-way tasks within one alphabet (Lake et al., 2015).
MIN_HELD_OUT_CHARACTERS = 20
# The seeded splits of the minimal sets: alphabets that train together, and
# the characters test and train hold.
NEAR_COPIES = ("Greek", "Latin")
SEEDED_TEST_CHARACTERS = (40, 66)
SEEDED_MIN_TRAIN_CHARACTERS = 130


def minimal_split_choices(counts: dict[str, int]) -> list[dict[str, list[str]]]:
    """Every seeded split of the minimal sets (``counts``: their alphabets'
    characters), in a fixed order: test two and val one of the alphabets of
    at least 20 characters but ``NEAR_COPIES``, test within
    ``SEEDED_TEST_CHARACTERS``, train at least
    ``SEEDED_MIN_TRAIN_CHARACTERS``."""
    import itertools

    candidates = sorted(
        a
        for a, count in counts.items()
        if count >= MIN_HELD_OUT_CHARACTERS and a not in NEAR_COPIES
    )
    low, high = SEEDED_TEST_CHARACTERS
    total = sum(counts.values())
    choices = []
    for test in itertools.combinations(candidates, 2):
        held_test = sum(counts[a] for a in test)
        if not low <= held_test <= high:
            continue
        for val in candidates:
            if val in test:
                continue
            if total - held_test - counts[val] < SEEDED_MIN_TRAIN_CHARACTERS:
                continue
            train = sorted(a for a in counts if a not in test and a != val)
            choices.append({"train": train, "val": [val], "test": list(test)})
    return choices


def _choose_alphabets(
    counts: dict[str, int], seed: int, fractions: Sequence[float]
) -> tuple[dict[str, list[str]], str]:
    """Alphabets of each split, and how they were chosen; see `plan_alphabet_split`."""
    names = sorted(counts)
    if set(names) == {a for split in MINIMAL_ALPHABETS.values() for a in split}:
        if seed == 0:
            chosen = {split: list(a) for split, a in MINIMAL_ALPHABETS.items()}
            return chosen, "fixed alphabets of the two minimal sets"
        choices = minimal_split_choices(counts)
        chosen = choices[np.random.default_rng(seed).integers(len(choices))]
        return chosen, (
            f"the minimal sets' split of seed {seed}: {' and '.join(NEAR_COPIES)} "
            f"train, test and val drawn among {len(choices)} choices"
        )
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    eligible = [a for a in order if counts[a] >= MIN_HELD_OUT_CHARACTERS]
    share = lambda split: sum(counts[a] for a in split) / sum(counts.values())
    test, val = [], []
    for alphabet in eligible:
        # Beyond their first alphabet(s), test leaves one for val and val one for train.
        if len(test) < 2 or (
            share(test) < fractions[2]
            and len(eligible) - len(test) > 1
            and len(order) - len(test) > 2
        ):
            test.append(alphabet)
        elif not val or (
            share(val) < fractions[1] and len(order) - len(test) - len(val) > 1
        ):
            val.append(alphabet)
        else:
            break
    train = [a for a in order if a not in test and a not in val]
    if len(test) < 2 or not val or not train:
        large = sum(c >= MIN_HELD_OUT_CHARACTERS for c in counts.values())
        raise ValueError(
            f"protocol 'alphabet' needs 3 alphabets of >= {MIN_HELD_OUT_CHARACTERS} "
            f"characters (2 test, 1 val) and more alphabets for train, got {large} of "
            f"{len(names)} alphabets with >= {MIN_HELD_OUT_CHARACTERS} characters."
        )
    chosen = {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    rule = (
        f"alphabets of >= {MIN_HELD_OUT_CHARACTERS} characters drawn with seed {seed} "
        f"to test (>= 2, >= {100 * fractions[2]:.4g}% of characters) then val "
        f"(>= {100 * fractions[1]:.4g}%)"
    )
    return chosen, rule


def plan_alphabet_split(
    ordered: Sequence[OmniglotCharacter], seed: int, fractions: Sequence[float]
) -> tuple[dict[str, np.ndarray], str]:
    """Indices into `ordered` of each split's characters, and a description.

    Whole alphabets go to train, val and test. The two minimal sets (exactly
    their 8 alphabets) take `MINIMAL_ALPHABETS` with seed 0 and one of
    `minimal_split_choices` with any other (see the module doc). Other
    data: alphabets in an order drawn with `seed`; those of at least 20
    characters go to test until it holds 2 alphabets and `fractions[2]` of
    the characters, then to val until it holds one and `fractions[1]` (as
    long as one is left for val, and one for train); the rest train.
    """
    counts = dict(collections.Counter(r.alphabet for r in ordered))
    chosen, rule = _choose_alphabets(counts, seed, fractions)
    alphabets = np.array([r.alphabet for r in ordered])
    indices = {
        split: np.flatnonzero(np.isin(alphabets, names))
        for split, names in chosen.items()
    }
    parts = [
        f"{split} {len(indices[split])} characters "
        f"({', '.join(f'{a} {counts[a]}' for a in chosen[split])})"
        for split in ("train", "val", "test")
    ]
    description = f"alphabet split (whole alphabets, {rule}): " + "; ".join(parts)
    return indices, description


def alphabets_of(classes: ClassImages) -> tuple[str, ...]:
    """The alphabet of each class of a split, from its name `"Alphabet/characterNN"`."""
    bad = [name for name in classes.class_names if "/" not in name]
    if bad:
        raise ValueError(
            f"class names must be 'Alphabet/characterNN' to give alphabets, got {bad[0]!r}."
        )
    return tuple(name.split("/", 1)[0] for name in classes.class_names)


def check_tasks_within_alphabet(
    classes: ClassImages, n_way: int, rotations: bool = False, split: str = ""
) -> None:
    """Raises ValueError when no alphabet of `classes` can give an N-way task.

    An alphabet gives N-way tasks when its characters (times 4 with rotations
    as new classes) number at least `n_way`. `split` names the split in the
    message ("train", "val", "test").
    """
    where = f"{split} split: " if split else ""
    counts = collections.Counter(alphabets_of(classes))
    if not counts:
        raise ValueError(f"{where}no character, so no {n_way}-way task.")
    largest = max(sorted(counts), key=counts.__getitem__)
    available = counts[largest] * (4 if rotations else 1)
    if n_way > available:
        how = f" ({counts[largest]} characters x 4 rotations)" if rotations else ""
        raise ValueError(
            f"{where}{n_way}-way tasks within one alphabet need an alphabet of "
            f">= {n_way} classes; the largest, {largest}, has {available}{how}; "
            f"expected n_way <= {available}."
        )
