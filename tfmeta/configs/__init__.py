"""Default settings per (algorithm, dataset), each following its paper: the
configs the binaries run, for building the same learner and task sets from
Python.

  config = tfmeta.get_config("maml", "omniglot", n_way=5, num_steps=1000)
  tasks = tfmeta.task_sets(config)
  learner = tfmeta.build_learner(config, tasks.input_shape)

``get_config(algorithm, dataset)`` returns a fresh dict; keyword settings
override single keys (checked as the binaries check their flags, one per key,
``experiments/flags.py``). Some (algorithm,
dataset) pairs have several named configs (``CONFIG_CHOICES``, e.g. LEO's
per-setting tuned hyperparameters), chosen with ``get_config(..., name=...)``
/ ``--config=name``; a config module with ``VARIANTS`` takes a paper's
variant as its argument, ``--config=name:variant`` (e.g.
``maml_omniglot:20way``). Which keys may change on resume: ``experiments/train.py``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from tfmeta.configs import keys

DATASETS = ("omniglot", "sinusoid", "folder", "embeddings")
"""The datasets a config runs on (``get_config``'s second argument)."""
CONFIGS = {
    ("maml", "omniglot"): "maml_omniglot",
    ("fomaml", "omniglot"): "maml_omniglot",
    ("reptile", "omniglot"): "reptile_omniglot",
    ("maml", "folder"): "maml_omniglot",
    ("fomaml", "folder"): "maml_omniglot",
    ("reptile", "folder"): "reptile_omniglot",
    ("maml", "sinusoid"): "maml_sinusoid",
    ("fomaml", "sinusoid"): "maml_sinusoid",
    ("reptile", "sinusoid"): "reptile_sinusoid",
    ("leo", "embeddings"): "leo_omniglot",
    ("maml", "embeddings"): "maml_embeddings",
    ("fomaml", "embeddings"): "maml_embeddings",
    ("maml_plus_plus", "omniglot"): "maml_plus_plus_omniglot",
    ("maml_plus_plus", "folder"): "maml_plus_plus_omniglot",
    ("maml_plus_plus", "sinusoid"): "maml_plus_plus_sinusoid",
    ("proto_maml", "omniglot"): "proto_maml_omniglot",
    ("proto_maml", "folder"): "proto_maml_omniglot",
    ("unicorn_maml", "omniglot"): "maml_omniglot",
    ("unicorn_maml", "folder"): "maml_omniglot",
    ("unicorn_reptile", "omniglot"): "reptile_omniglot",
    ("unicorn_reptile", "folder"): "reptile_omniglot",
    ("meta_sgd", "omniglot"): "meta_sgd_omniglot",
    ("meta_sgd", "folder"): "meta_sgd_omniglot",
    ("meta_sgd", "sinusoid"): "meta_sgd_sinusoid",
    ("protonet", "omniglot"): "protonet_omniglot",
    ("protonet", "folder"): "protonet_omniglot",
    ("nearest_centroid", "omniglot"): "nearest_centroid_omniglot",
    ("nearest_centroid", "folder"): "nearest_centroid_omniglot",
    ("nearest_centroid", "embeddings"): "nearest_centroid_embeddings",
}
"""The default config module of each (algorithm, dataset) pair."""
# Named alternatives to the default config of a pair (--config=<name>).
CONFIG_CHOICES = {
    ("leo", "embeddings"): (
        "leo_omniglot",
        "leo_reference",
        "leo_miniimagenet_1shot",
        "leo_miniimagenet_5shot",
        "leo_tieredimagenet_1shot",
        "leo_tieredimagenet_5shot",
    ),
}
"""Named alternatives to a pair's default config (``get_config(..., name=...)``)."""

# Settings common to every config (each config overrides what its paper says).
BASE: dict[str, Any] = {
    "seed": 0,
    "split_seed": 0,
    "split_protocol": "auto",
    # None: tasks within one alphabet with split_protocol=alphabet, else mixed.
    "tasks_within_alphabet": None,
    "rotations": "train",
    "augment": 0.0,
    "support_copies": 0,
    "support_augment": 1.0,
    "query_copies": 0,
    "query_augment": 1.0,
    "data_dir": "",
    "data_source": "",
    "image_size": 28,
    "channels": 1,
    "n_way": 5,
    "k_shot": 1,
    "train_k_shot": None,
    "q_query": 1,
    "eval_q_query": 15,
    "meta_batch_size": 32,
    "inner_lr": 0.4,
    "inner_steps": 1,
    "second_order_steps": None,
    "recompute": False,
    "recompute_steps": None,
    "eval_inner_steps": 3,
    "report_inner_steps": [],
    "inner_optimizer": "sgd",
    "inner_beta1": 0.0,
    "inner_batch_size": None,
    "eval_inner_batch_size": None,
    "outer_optimizer": "adam",
    "outer_lr": 1e-3,
    "final_outer_lr": 0.0,
    "outer_lr_decay_steps": 2000,
    "outer_lr_decay_rate": 0.5,
    "gradient_clip_norm": None,
    "num_steps": 60000,
    "adapt_variables": "all",
    "transductive": False,
    "task_weighting": "uniform",
    "task_execution": "loop",
    "unroll_inner_loop": True,
    "noisy_task_fraction": 0.0,
    "jit_compile": False,
    "filters": 64,
    "depth": 4,
    "pooling": "stride",
    "hidden": [40, 40],
    "val_tasks": 200,
    "test_tasks": 600,
    "test_seed": 1234,
    "eval_batch_size": 20,
    "log_every": 50,
    "eval_every": 500,
    "checkpoint_every": 500,
    # Model choice: None picks conv4 (images), mlp (sinusoid), linear (embeddings)
    # or leo (--algorithm=leo). New fixed keys default to None, so workdirs
    # written before they existed still resume.
    "model": None,
    "pretrained_backbone": "",  # experiments.embed's conv4 (folder or .weights.h5) to start image learners from
    # --dataset=embeddings: <data_dir>/<embedding_dataset>/<embedding_crop>/<split>_embeddings.pkl
    "embedding_dataset": None,
    "embedding_crop": "center",
    # LEO (defaults: google-deepmind/leo config.py); see tfmeta/configs/leo_*.py
    "num_latents": None,
    "finetune_steps": 5,
    "finetune_lr": 1e-3,
    "kl_weight": 1e-3,
    "encoder_penalty_weight": 1e-9,
    "l2_penalty_weight": 1e-8,
    "orthogonality_penalty_weight": 1e-3,
    "dropout_rate": 0.5,
    "kl_estimator": "sample",
    "deterministic": False,
    "gradient_clip_value": None,
    "gradient_clip_variable_norm": None,
}
"""Settings common to every config; each config module overrides what its paper says."""


def get_config(
    algorithm: str, dataset: str, name: str | None = None, **settings: Any
) -> dict[str, Any]:
    """The default config of ``algorithm`` on ``dataset`` (a fresh dict), or the
    named one of ``CONFIG_CHOICES`` (``name:variant`` for a paper's variant).

    ``settings`` override keys of the config; with any, the result is checked
    (``check_config``): ValueError, one line naming the key, for an unknown
    key or a setting that cannot work."""
    if dataset not in DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}; expected one of {list(DATASETS)}"
        )
    key = (algorithm, dataset)
    if key not in CONFIGS:
        known = sorted({a for a, _ in CONFIGS})
        if algorithm in known:
            datasets = sorted(d for a, d in CONFIGS if a == algorithm)
            raise ValueError(
                f"--algorithm={algorithm} does not run on --dataset={dataset}; "
                f"expected one of {datasets}"
            )
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {known}")
    name, _, variant = (name or "").partition(":")
    if name and name != CONFIGS[key]:
        choices = CONFIG_CHOICES.get(key, (CONFIGS[key],))
        if name not in choices:
            raise ValueError(
                f"unknown config {name!r} for --algorithm={algorithm} --dataset={dataset}; "
                f"expected one of {list(choices)}"
            )
    module = importlib.import_module(f".{name or CONFIGS[key]}", __name__)
    config = dict(BASE)
    # Keys an algorithm declares beyond the common ones (a new algorithm's own
    # settings); the common keys keep BASE's values.
    from tfmeta.algorithms import get_algorithm as registered

    for key, value in registered(algorithm).defaults.items():
        config.setdefault(key, value)
    config.update(_module_config(module, variant))
    config["algorithm"] = algorithm
    config["dataset"] = dataset
    if settings:
        unknown = sorted(set(settings) - set(config) - set(keys.INTERNAL))
        if unknown:
            raise ValueError(
                f"unknown setting {unknown[0]!r} of {algorithm} on {dataset}; the "
                "keys are those of get_config's dict"
            )
        config.update(settings)
        try:
            check_config(config)
        except ValueError as error:  # keys by their names, not as the binaries' flags
            raise ValueError(re.sub(r"--(?=\w)", "", str(error))) from None
    return config


def check_config(config: dict[str, Any], *, stored: bool = False) -> None:
    """Raises ValueError (one line naming the key) for settings that cannot
    work, before any data is read (``tfmeta.configs.checks``)."""
    from tfmeta.configs.checks import check_config as check

    check(config, stored=stored)


def build_learner(config: dict[str, Any], model_or_input_shape):
    """The learner of ``config`` (``tfmeta.configs.build``): around a given
    Keras model, or around the config's model built for one example of
    ``model_or_input_shape`` (``TaskSets.input_shape``), seeded by its seed
    and started from its ``pretrained_backbone`` where it names one."""
    from tfmeta.configs import build

    return build.build_learner(config, model_or_input_shape)


def _module_config(module, variant: str) -> dict[str, Any]:
    """``module.get_config()``, or with a paper's variant (``--config=name:variant``)
    among the module's ``VARIANTS``."""
    if not variant:
        return module.get_config()
    variants = getattr(module, "VARIANTS", ())
    if variant not in variants:
        name = module.__name__.rsplit(".", 1)[-1]
        raise ValueError(
            f"unknown variant {variant!r} of config {name}; expected one of {list(variants)}"
        )
    return module.get_config(variant)


__all__ = [
    "BASE",
    "CONFIGS",
    "CONFIG_CHOICES",
    "DATASETS",
    "build_learner",
    "check_config",
    "get_config",
]
