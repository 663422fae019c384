"""Algorithms by name: each module declares its ``Algorithm``s
(``tfmeta.core.algorithm``); adding one is a line here."""

from __future__ import annotations

from tfmeta.algorithms import (
    leo,
    maml,
    maml_plus_plus,
    meta_sgd,
    nearest_centroid,
    proto_maml,
    protonet,
    reptile,
    unicorn_maml,
    unicorn_reptile,
)
from tfmeta.core.algorithm import Algorithm

ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm
    for algorithm in (
        maml.MAML_ALGORITHM,
        maml.FOMAML_ALGORITHM,
        maml_plus_plus.ALGORITHM,
        reptile.ALGORITHM,
        leo.ALGORITHM,
        protonet.ALGORITHM,
        nearest_centroid.ALGORITHM,
        proto_maml.ALGORITHM,
        unicorn_maml.ALGORITHM,
        unicorn_reptile.ALGORITHM,
        meta_sgd.ALGORITHM,
    )
}
"""Every registered algorithm by name (``--algorithm``): the one list that the
binaries, their help and the benchmark read."""


def get_algorithm(name: str) -> Algorithm:
    """The ``Algorithm`` called ``name``; ValueError naming the known ones."""
    if name not in ALGORITHMS:
        raise ValueError(
            f"unknown algorithm {name!r}; expected one of {sorted(ALGORITHMS)}"
        )
    return ALGORITHMS[name]
