"""tfmeta: gradient-based meta-learning for TensorFlow 2 and Keras 3."""

from tfmeta.algorithms import FOMAML, MAML, MetaLearner, Reptile, get_algorithm
from tfmeta.data import Episode, episode_dataset, sinusoid_dataset
from tfmeta.models import MetaBatchNorm, conv4, mlp
from tfmeta.training import Trainer, evaluate

__version__ = "0.1.0"

__all__ = [
    "FOMAML",
    "MAML",
    "Episode",
    "MetaBatchNorm",
    "MetaLearner",
    "Reptile",
    "Trainer",
    "conv4",
    "episode_dataset",
    "evaluate",
    "get_algorithm",
    "mlp",
    "sinusoid_dataset",
]
