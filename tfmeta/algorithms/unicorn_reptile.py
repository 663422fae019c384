"""Reptile from UNICORN-MAML's shared head start: every task's inner loop
starts with the N-way head at zero (one vector for every class, so the start
does not depend on the order of a task's classes), and the rest of the
network at phi. A meta-learned Reptile head is otherwise pulled toward the
average of the heads of every label permutation, and each task's inner loop
has first to undo it. The pseudo-gradient is the inner loop's move on the
body (phi - phi_tilde_i) and zero on phi's own head, which is never used
(``tfmeta.algorithms.reptile``); the export serves adaptation only.

  python -m experiments.train --algorithm=unicorn_reptile --dataset=omniglot \
      --config=reptile_omniglot:pretrained --pretrained_backbone=/tmp/tfmeta_runs/backbone \
      --workdir=/tmp/tfmeta_runs/unicorn_reptile
"""

from __future__ import annotations

from tfmeta.algorithms.reptile import Reptile
from tfmeta.algorithms.unicorn_maml import SharedHeadStart
from tfmeta.core.algorithm import Algorithm


class UnicornReptile(SharedHeadStart, Reptile):
    """Reptile from a head start shared by every class. Arguments:
    ``Reptile``; classification only."""

    name = "unicorn_reptile"


ALGORITHM = Algorithm(
    name="unicorn_reptile",
    learner=UnicornReptile,
    summary="Reptile from UNICORN-MAML's shared head start",
)
