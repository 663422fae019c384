from tfmeta.algorithms.base import MetaLearner, TaskResult
from tfmeta.algorithms.inner_optimizers import InnerAdam, InnerSGD, make_inner_optimizer
from tfmeta.algorithms.leo import LEO
from tfmeta.algorithms.maml import FOMAML, MAML
from tfmeta.algorithms.registry import (
    ALGORITHMS,
    MODEL_SPECIFIC_ALGORITHMS,
    get_algorithm,
)
from tfmeta.algorithms.reptile import Reptile, annealed_outer_optimizer

__all__ = [
    "ALGORITHMS",
    "FOMAML",
    "LEO",
    "MAML",
    "MODEL_SPECIFIC_ALGORITHMS",
    "InnerAdam",
    "InnerSGD",
    "MetaLearner",
    "Reptile",
    "TaskResult",
    "annealed_outer_optimizer",
    "get_algorithm",
    "make_inner_optimizer",
]
