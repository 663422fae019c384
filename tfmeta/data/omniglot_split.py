"""Meta-learning splits of Omniglot characters into disjoint class sets:
the protocol of Lake et al. (2015), of the MAML paper (Finn et al., 2017), a
seeded random split by character, or whole alphabets held out for validation
and test (`tfmeta.data.alphabet_split`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from tfmeta.data.alphabet_split import plan_alphabet_split
from tfmeta.data.class_images import ClassImages
from tfmeta.data.omniglot import OmniglotCharacter

PROTOCOLS = ("auto", "lake", "maml", "random", "alphabet")
"""The class splits ``split_omniglot`` knows (``--split_protocol``): ``auto``
picks ``lake`` with background and evaluation sets, else ``random``."""
_MAML_TRAIN, _MAML_VAL = 1100, 100  # Finn et al. (2017), data_generator.py.
_LAKE_VAL_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class _SplitPlan:
    """Indices into the sorted characters for each split, and a description."""

    characters: list[OmniglotCharacter]
    indices: dict[str, np.ndarray]
    description: str


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            "fractions must be three non-negative numbers (train, val, test) summing "
            f"to 1, got {fractions}."
        )
    return fractions


def _plan_split(
    characters: Sequence[OmniglotCharacter],
    protocol: str,
    seed: int,
    fractions: Sequence[float],
) -> _SplitPlan:
    """Chooses the characters of each split; see `split_omniglot`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    ordered = sorted(characters, key=lambda r: (r.alphabet, r.character))
    names = [r.name for r in ordered]
    if len(set(names)) != len(names):
        raise ValueError("characters holds the same alphabet/character twice.")
    n = len(ordered)
    rng = np.random.default_rng(seed)
    sources = np.array([r.source for r in ordered])
    if protocol == "auto":
        has_lake_sets = {"background", "evaluation"} <= set(sources.tolist())
        protocol = "lake" if has_lake_sets else "random"

    if protocol == "lake":
        missing = [s for s in ("background", "evaluation") if s not in sources]
        if missing:
            raise ValueError(
                f"protocol 'lake' needs the background and evaluation sets "
                f"(images_background.zip / tfds split 'train' and images_evaluation.zip / "
                f"tfds split 'test'); missing: {', '.join(missing)}. "
                "Use protocol='random' with the minimal sets."
            )
        # Minimal-set characters belong to background alphabets.
        background = np.flatnonzero(sources != "evaluation")
        test = np.flatnonzero(sources == "evaluation")
        num_val = int(np.floor(_LAKE_VAL_FRACTION * len(background) + 0.5))
        shuffled = rng.permutation(background)
        val, train = np.sort(shuffled[:num_val]), np.sort(shuffled[num_val:])
        alphabets = lambda idx: len({ordered[i].alphabet for i in idx})
        description = (
            f"lake split (Lake et al., 2015): {len(background)} background characters "
            f"({alphabets(background)} alphabets) -> {len(train)} train / {len(val)} val "
            f"(10% of characters held out, seed {seed}); {len(test)} evaluation characters "
            f"({alphabets(test)} alphabets) -> test"
        )
    elif protocol == "alphabet":
        indices, description = plan_alphabet_split(
            ordered, seed, _check_fractions(fractions)
        )
        return _SplitPlan(ordered, indices, description)
    elif protocol == "maml":
        if n < _MAML_TRAIN + _MAML_VAL:
            raise ValueError(
                f"protocol 'maml' needs at least {_MAML_TRAIN + _MAML_VAL} characters "
                f"({_MAML_TRAIN} train + {_MAML_VAL} val), got {n}. Use protocol='random'."
            )
        shuffled = rng.permutation(n)
        train = np.sort(shuffled[:_MAML_TRAIN])
        val = np.sort(shuffled[_MAML_TRAIN : _MAML_TRAIN + _MAML_VAL])
        test = np.sort(shuffled[_MAML_TRAIN + _MAML_VAL :])
        description = (
            f"maml split (Finn et al., 2017) of {n} characters shuffled with seed {seed}: "
            f"{len(train)}/{len(val)}/{len(test)}"
        )
    else:
        fractions = _check_fractions(fractions)
        num_train = min(n, int(np.floor(fractions[0] * n + 0.5)))
        num_val = min(n - num_train, int(np.floor(fractions[1] * n + 0.5)))
        shuffled = rng.permutation(n)
        train = np.sort(shuffled[:num_train])
        val = np.sort(shuffled[num_train : num_train + num_val])
        test = np.sort(shuffled[num_train + num_val :])
        for split, idx, fraction in zip(
            ("train", "val", "test"), (train, val, test), fractions
        ):
            if fraction > 0 and len(idx) == 0:
                raise ValueError(
                    f"A random split of {n} characters with fractions {fractions} leaves "
                    f"{split} empty; expected more characters or a fraction of 0."
                )
        percents = "/".join(f"{100 * f:.4g}" for f in fractions)
        description = (
            f"random {percents} split by character over {n} characters (seed {seed}): "
            f"{len(train)}/{len(val)}/{len(test)}"
        )
    return _SplitPlan(ordered, {"train": train, "val": val, "test": test}, description)


def split_omniglot(
    characters: Sequence[OmniglotCharacter],
    protocol: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
) -> dict[str, ClassImages]:
    """Splits Omniglot characters into disjoint train/val/test class sets.

    Protocols:
      "lake": background alphabets -> train, except a seeded 10% of the
        background *characters* held out as val; evaluation alphabets -> test
        (Lake et al., 2015). Needs both the background and evaluation sets.
      "maml": the MAML paper's split (Finn et al., 2017): all characters,
        sorted, shuffled with `seed`; 1100 train, 100 val, the rest (423 with
        the full 1623) test. Needs >= 1200 characters.
      "random": seeded split by character with `fractions` (train, val, test);
        train and val sizes are rounded, test takes the rest. Usable with
        the minimal sets alone, as is "alphabet".
      "alphabet": whole alphabets to train, val and test, each val and test
        alphabet of >= 20 characters, >= 2 test alphabets. On the two minimal
        sets: train Early_Aramaic, Japanese_(katakana), Korean, Sanskrit,
        Tagalog (168 characters); val Balinese (24); test Greek, Latin (50).
        Other data: seeded, test and val sized by `fractions` (see
        `tfmeta.data.alphabet_split`). Tasks within one alphabet: the
        `class_groups` of `episode_dataset`, from `alphabets_of`.
      "auto": "lake" when background and evaluation are present, else "random".

    Args:
      characters: records from `load_omniglot_folder` / `load_omniglot_tfds`
        (any order).
      protocol: one of `PROTOCOLS`.
      seed: seed of the shuffle; the same seed gives the same split.
      fractions: (train, val, test) fractions for "random" (for "alphabet"
        off the minimal sets, the least share of characters of val and test).

    Returns:
      {"train", "val", "test"} -> `ClassImages` with class names
      `"Alphabet/characterNN"` sorted by name; see `describe_split` for a
      one-line description.
    """
    plan = _plan_split(characters, protocol, seed, fractions)
    image_shape = plan.characters[0].images.shape[1:] if plan.characters else None
    return {
        split: ClassImages.from_list(
            [plan.characters[i].name for i in idx],
            [plan.characters[i].images for i in idx],
            image_shape=image_shape,
        )
        for split, idx in plan.indices.items()
    }


def describe_split(
    characters: Sequence[OmniglotCharacter],
    protocol: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
) -> str:
    """One line describing what `split_omniglot` does with the same arguments.

    E.g. "random 70/10/20 split by character over 242 characters (seed 0):
    169/24/49". Copies no images.
    """
    return _plan_split(characters, protocol, seed, fractions).description
