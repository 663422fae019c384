"""One module per algorithm; ``registry`` maps names to them."""

from tfmeta.algorithms.leo import LEO
from tfmeta.algorithms.maml import FOMAML, MAML
from tfmeta.algorithms.maml_plus_plus import MAMLPlusPlus
from tfmeta.algorithms.meta_sgd import MetaSGD
from tfmeta.algorithms.nearest_centroid import NearestCentroid
from tfmeta.algorithms.proto_maml import ProtoMAML
from tfmeta.algorithms.protonet import PrototypicalNetwork
from tfmeta.algorithms.registry import ALGORITHMS, get_algorithm
from tfmeta.algorithms.reptile import Reptile
from tfmeta.algorithms.unicorn_maml import UnicornMAML
from tfmeta.algorithms.unicorn_reptile import UnicornReptile
from tfmeta.core import (
    FastWeightLearner,
    InnerAdam,
    InnerSGD,
    Learner,
    TaskResult,
    annealed_outer_optimizer,
    make_inner_optimizer,
)

__all__ = [
    "ALGORITHMS",
    "FOMAML",
    "LEO",
    "MAML",
    "FastWeightLearner",
    "InnerAdam",
    "InnerSGD",
    "Learner",
    "MAMLPlusPlus",
    "MetaSGD",
    "NearestCentroid",
    "ProtoMAML",
    "PrototypicalNetwork",
    "Reptile",
    "TaskResult",
    "UnicornMAML",
    "UnicornReptile",
    "annealed_outer_optimizer",
    "get_algorithm",
    "make_inner_optimizer",
]
