"""tfmeta: gradient-based meta-learning for TensorFlow 2 and Keras 3."""

import os as _os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with newer
# vector and matrix extensions; on others (e.g. AVX2 CPUs) its Eigen kernels run. For the
# small convolutions of meta-learning the oneDNN kernels are faster and use
# less memory (BUILD_NOTES.md: second-order MAML 20-way step -25%, FOMAML
# -20%), so tfmeta turns them on unless the user chose. TensorFlow reads the
# variable when it is first imported: import tfmeta first, or set it yourself
# (TF_ENABLE_ONEDNN_OPTS=0 keeps the Eigen kernels).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from tfmeta.algorithms import FOMAML, MAML, MetaLearner, Reptile, get_algorithm
from tfmeta.data import Episode, episode_dataset, sinusoid_dataset
from tfmeta.models import MetaBatchNorm, conv4, mlp
from tfmeta.training import Trainer, evaluate

__version__ = "0.1.0"


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


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
    "onednn_enabled",
    "sinusoid_dataset",
]
