"""Learners by name."""

from __future__ import annotations

from tfmeta.algorithms.base import MetaLearner
from tfmeta.algorithms.leo import LEO
from tfmeta.algorithms.maml import FOMAML, MAML
from tfmeta.algorithms.reptile import Reptile

ALGORITHMS: dict[str, type[MetaLearner]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "reptile": Reptile,
}

# Learners that need their own model class (not any Keras classifier), so
# they are kept out of ALGORITHMS, whose members all meta-learn any model.
MODEL_SPECIFIC_ALGORITHMS: dict[str, type[MetaLearner]] = {
    "leo": LEO,  # needs a tfmeta.models.LEOModel
}


def get_algorithm(name: str) -> type[MetaLearner]:
    known = {**ALGORITHMS, **MODEL_SPECIFIC_ALGORITHMS}
    if name not in known:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {sorted(known)}")
    return known[name]
