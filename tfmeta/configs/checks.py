"""The checks of a config (``get_config``) before any data is read: each
rule of an algorithm, the core, the model or the data checked by its owner.
A setting that cannot work raises ValueError, one line naming the key."""

from __future__ import annotations

import math
from typing import Any

from tfmeta.algorithms import ALGORITHMS, get_algorithm
from tfmeta.configs import BASE, keys
from tfmeta.configs.build import model_name, problem_of
from tfmeta.core.executor import check_looped_tasks
from tfmeta.core.inner_loop import check_inner_step_bound
from tfmeta.core.outer_optimizers import check_outer_optimizer
from tfmeta.data.tasks import eval_batch_tasks
from tfmeta.models.conv import check_conv4, check_mlp
from tfmeta.models.resnet import check_resnet12
from tfmeta.training.backbone import check_backbone

ROTATIONS = ("train", "all", "none")
IMAGE_DATASETS = ("omniglot", "folder")
MODELS = ("conv4", "resnet12", "mlp", "linear", "leo")
# The models each dataset's inputs fit (``tfmeta.configs.build.build_model``).
DATASET_MODELS = {
    "omniglot": ("conv4", "resnet12"),
    "folder": ("conv4", "resnet12"),
    "sinusoid": ("mlp",),
    "embeddings": ("linear", "leo"),
}


def check_config(config: dict[str, Any], *, stored: bool = False) -> None:
    """Raises ValueError for settings that cannot work, before any data is read.

    ``stored``: the config of a trained run (evaluate, export): the files it
    started from (a pretrained backbone) are not read again.
    """
    _check_types(config)
    for key, value in config.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"--{key} must be a finite number, got {value}")
    algorithm = get_algorithm(config["algorithm"])
    positive = [
        "n_way",
        "k_shot",
        "q_query",
        "eval_q_query",
        "meta_batch_size",
        "test_tasks",
        "eval_batch_size",
        "log_every",
        "eval_every",
        "checkpoint_every",
    ]
    for key in positive:
        if int(config[key]) < 1:
            raise ValueError(f"--{key} must be >= 1, got {config[key]}")
    if config.get("train_k_shot") is not None and int(config["train_k_shot"]) < 1:
        raise ValueError(
            f"--train_k_shot must be >= 1 (or unset: k_shot), got {config['train_k_shot']}"
        )
    # num_steps=0: evaluate (and export) theta as built, e.g. a pretrained
    # backbone, or a learner that is not meta-trained. Inner steps: the
    # algorithm's own check.
    for key in ("val_tasks", "num_steps"):
        if int(config[key]) < 0:
            raise ValueError(f"--{key} must be >= 0, got {config[key]}")
    for steps in config["report_inner_steps"]:
        if int(steps) < 0:
            raise ValueError(f"--report_inner_steps must be >= 0 each, got {steps}")
        check_inner_step_bound("report_inner_steps", int(steps))
    if not 0.0 <= config["noisy_task_fraction"] <= 1.0:
        raise ValueError(
            f"--noisy_task_fraction must be in [0, 1], got {config['noisy_task_fraction']}"
        )
    if config["rotations"] not in ROTATIONS:
        raise ValueError(
            f"--rotations must be one of {ROTATIONS}, got {config['rotations']!r}"
        )
    if config["dataset"] in IMAGE_DATASETS and int(config["image_size"]) < 1:
        raise ValueError(f"--image_size must be >= 1, got {config['image_size']}")
    for kind in ("support", "query"):
        if config[f"{kind}_copies"] and config["dataset"] not in IMAGE_DATASETS:
            raise ValueError(
                f"--{kind}_copies distorts images; --dataset={config['dataset']} has none"
            )
    if config["dataset"] == "folder" and not config["data_dir"]:
        raise ValueError(
            "--dataset=folder needs --data_dir=<root> holding train/, val/ and test/ class folders"
        )
    check_outer_optimizer(
        config["outer_optimizer"],
        config["outer_lr"],
        config["gradient_clip_norm"],
        config["final_outer_lr"],
        config["outer_lr_decay_steps"],
        config["outer_lr_decay_rate"],
    )
    algorithm.check_config(config, problem_of(config))
    _check_embeddings_and_leo(config)
    _check_model(config)
    _check_omniglot_split(config)
    if config.get("pretrained_backbone") and not stored:
        _check_pretrained_backbone(config)
    if not stored:
        check_looped_tasks(
            config["task_execution"], "meta_batch_size", int(config["meta_batch_size"])
        )
    check_looped_tasks(
        config["task_execution"], "eval_batch_size", eval_batch_tasks(config)
    )


def input_shape(config: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of one model input as the data will give it, where the
    config says (None for embeddings: their size is in the files)."""
    if config["dataset"] == "sinusoid":
        return (1,)
    if config["dataset"] in IMAGE_DATASETS:
        channels = 1 if config["dataset"] == "omniglot" else int(config["channels"])
        return (int(config["image_size"]), int(config["image_size"]), channels)
    return None


def _check_types(config: dict[str, Any]) -> None:
    """Each known key's value of the type of its flag (a hand-edited
    config.json may hold anything); None where the default is None."""
    defaults = dict(BASE)
    for algorithm in ALGORITHMS.values():
        for name, value in algorithm.defaults.items():
            defaults.setdefault(name, value)
    for name, value in config.items():
        if name in keys.INTERNAL or name not in defaults:
            continue
        kind = keys.TYPES.get(name) or type(defaults[name])
        if value is None and (defaults[name] is None or name in keys.TYPES):
            continue
        if kind in ("ints", list, tuple):
            valid = isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            )
            expected = "a list of integers"
        elif kind is float:
            valid = isinstance(value, (int, float)) and not isinstance(value, bool)
            expected = "a number"
        elif kind is int:
            valid = isinstance(value, int) and not isinstance(value, bool)
            expected = "an integer"
        elif kind is bool:
            valid, expected = isinstance(value, bool), "true or false"
        elif kind is str:
            valid, expected = isinstance(value, str), "a string"
        else:
            continue
        if not valid:
            raise ValueError(f"--{name} must be {expected}, got {value!r}")


def _check_model(config: dict[str, Any]) -> None:
    """The model's own rules (its factory's check), before data is read."""
    model = model_name(config)
    if model == "conv4":
        check_conv4(int(config["filters"]), int(config["depth"]), config["pooling"])
    elif model == "resnet12":
        check_resnet12(int(config["filters"]))
    elif model == "mlp":
        check_mlp(tuple(int(units) for units in config["hidden"]))


def _check_pretrained_backbone(config: dict[str, Any]) -> None:
    """The backbone's files and its fit to the run (architecture, split);
    reads neither data nor weights (the data source is compared once the
    data is read, when the backbone is loaded)."""
    model = model_name(config)
    if model != "conv4" or config["dataset"] not in IMAGE_DATASETS:
        raise ValueError(
            f"pretrained_backbone is a conv4 for images (--dataset={'|'.join(IMAGE_DATASETS)}); "
            f"this run has --dataset={config['dataset']} and model {model}"
        )
    check_backbone(config)


def _check_embeddings_and_leo(config: dict[str, Any]) -> None:
    model = model_name(config)
    if model not in MODELS:
        raise ValueError(f"--model must be one of {MODELS}, got {model!r}")
    fitting = DATASET_MODELS.get(config["dataset"], MODELS)
    if model not in fitting and model in ("conv4", "resnet12", "mlp"):
        raise ValueError(
            f"--model={model} does not fit --dataset={config['dataset']}: "
            f"its inputs take {' or '.join(fitting)}"
        )
    embeddings = config["dataset"] == "embeddings"
    if embeddings != (model in ("linear", "leo")):
        raise ValueError(
            f"--model={model} does not fit --dataset={config['dataset']}: embedding "
            "vectors take --model=linear (or leo with --algorithm=leo), images conv4 or "
            "resnet12, sinusoid mlp"
        )
    required = get_algorithm(config["algorithm"]).model
    if required and model != required:
        raise ValueError(
            f"algorithm {config['algorithm']} needs model {required}, got {model!r}"
        )
    needs_own = {a.model for a in ALGORITHMS.values() if a.model}
    if model in needs_own and required != model:
        raise ValueError(
            f"model {model} belongs to the algorithm that needs it, not to "
            f"{config['algorithm']!r}"
        )
    if embeddings:
        if not config["data_dir"] or not config["embedding_dataset"]:
            raise ValueError(
                "--dataset=embeddings needs --data_dir=<root> and --embedding_dataset=<name> "
                "(files <root>/<name>/<embedding_crop>/<split>_embeddings.pkl or .npz)"
            )
        if config["rotations"] != "none":
            raise ValueError(
                "--dataset=embeddings holds feature vectors, which cannot be rotated: "
                f"use --rotations=none, got {config['rotations']!r}"
            )


def _check_omniglot_split(config: dict[str, Any]) -> None:
    """The Omniglot split protocol and tasks within one alphabet (alphabet
    sizes are checked once the data is read, by ``tfmeta.data.tasks``)."""
    from tfmeta.data import PROTOCOLS
    from tfmeta.data.tasks import tasks_within_alphabet

    if config["dataset"] == "omniglot" and config["split_protocol"] not in PROTOCOLS:
        raise ValueError(
            f"--split_protocol must be one of {PROTOCOLS}, got {config['split_protocol']!r}"
        )
    tasks_within_alphabet(config)
