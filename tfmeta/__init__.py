"""tfmeta: gradient-based meta-learning for TensorFlow 2 and Keras 3.

Importing tfmeta changes nothing in the process and loads no TensorFlow: the
public names below are imported on first use (PEP 562). The platform tuning
the binaries run with is opt-in, one call before TensorFlow is imported:
``tfmeta.runtime.configure()``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tfmeta.version import __version__ as __version__

# Public name -> the module that defines it.
_EXPORTS = {
    # Every learner of the registry, by its class.
    "FOMAML": "tfmeta.algorithms",
    "MAML": "tfmeta.algorithms",
    "LEO": "tfmeta.algorithms",
    "MAMLPlusPlus": "tfmeta.algorithms",
    "MetaSGD": "tfmeta.algorithms",
    "NearestCentroid": "tfmeta.algorithms",
    "ProtoMAML": "tfmeta.algorithms",
    "PrototypicalNetwork": "tfmeta.algorithms",
    "Ensemble": "tfmeta.core",
    "FastWeightLearner": "tfmeta.core",
    "Learner": "tfmeta.core",
    "Reptile": "tfmeta.algorithms",
    "UnicornMAML": "tfmeta.algorithms",
    "UnicornReptile": "tfmeta.algorithms",
    "get_algorithm": "tfmeta.algorithms",
    "get_config": "tfmeta.configs",
    "build_learner": "tfmeta.configs",
    "TaskSets": "tfmeta.data",
    "task_sets": "tfmeta.data",
    "Episode": "tfmeta.data",
    "episode_dataset": "tfmeta.data",
    "sinusoid_dataset": "tfmeta.data",
    "MetaBatchNorm": "tfmeta.models",
    "conv4": "tfmeta.models",
    "mlp": "tfmeta.models",
    "MetaLearnerModel": "tfmeta.training",
    "Trainer": "tfmeta.training",
    "evaluate": "tfmeta.training",
    # Platform tuning, kept here for existing callers: see tfmeta.runtime.
    "CPU_THREADING": "tfmeta.runtime",
    "onednn_enabled": "tfmeta.runtime",
    "set_cpu_threading": "tfmeta.runtime",
    "set_malloc_arenas": "tfmeta.runtime",
}
_SUBMODULES = (
    "algorithms",
    "configs",
    "core",
    "data",
    "export",
    "models",
    "runtime",
    "serving",
    "training",
)

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from tfmeta import (  # noqa: F401
        algorithms,
        configs,
        core,
        data,
        export,
        models,
        runtime,
        serving,
        training,
    )
    from tfmeta.algorithms import (
        FOMAML,
        LEO,
        MAML,
        MAMLPlusPlus,
        MetaSGD,
        NearestCentroid,
        ProtoMAML,
        PrototypicalNetwork,
        Reptile,
        UnicornMAML,
        UnicornReptile,
        get_algorithm,
    )
    from tfmeta.configs import build_learner, get_config
    from tfmeta.core import Ensemble, FastWeightLearner, Learner
    from tfmeta.data import (
        Episode,
        TaskSets,
        episode_dataset,
        sinusoid_dataset,
        task_sets,
    )
    from tfmeta.models import MetaBatchNorm, conv4, mlp
    from tfmeta.runtime import (  # noqa: F401
        CPU_THREADING,
        onednn_enabled,
        set_cpu_threading,
        set_malloc_arenas,
    )
    from tfmeta.training import MetaLearnerModel, Trainer, evaluate


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


__all__ = [
    "FOMAML",
    "LEO",
    "MAML",
    "Ensemble",
    "Episode",
    "FastWeightLearner",
    "Learner",
    "MAMLPlusPlus",
    "MetaBatchNorm",
    "MetaLearnerModel",
    "MetaSGD",
    "NearestCentroid",
    "ProtoMAML",
    "PrototypicalNetwork",
    "Reptile",
    "TaskSets",
    "Trainer",
    "UnicornMAML",
    "UnicornReptile",
    "build_learner",
    "conv4",
    "episode_dataset",
    "evaluate",
    "get_algorithm",
    "get_config",
    "mlp",
    "onednn_enabled",
    "set_cpu_threading",
    "set_malloc_arenas",
    "sinusoid_dataset",
    "task_sets",
]
