"""Learners by name."""

from __future__ import annotations

from tfmeta.algorithms.base import MetaLearner
from tfmeta.algorithms.maml import FOMAML, MAML
from tfmeta.algorithms.reptile import Reptile

ALGORITHMS: dict[str, type[MetaLearner]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "reptile": Reptile,
}


def get_algorithm(name: str) -> type[MetaLearner]:
    if name not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {name!r}; expected one of {sorted(ALGORITHMS)}"
        )
    return ALGORITHMS[name]
