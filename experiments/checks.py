"""What the binaries check before any work: a resolved config's settings
(each rule of an algorithm, the core or the data checked by its owner) and
a trained workdir's presence."""

from __future__ import annotations

import math
from typing import Any

from absl import app

from tfmeta.algorithms import ALGORITHMS, get_algorithm
from tfmeta.core.outer_optimizers import check_outer_optimizer

from .builders import model_name
from .pretrained import check_backbone

ROTATIONS = ("train", "all", "none")
IMAGE_DATASETS = ("omniglot", "folder")
MODELS = ("conv4", "mlp", "linear", "leo")


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for settings that cannot work, before any data is read."""
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
    ]
    for key in positive:
        if int(config[key]) < 1:
            raise ValueError(f"--{key} must be >= 1, got {config[key]}")
    # num_steps=0: evaluate (and export) theta as built, e.g. a pretrained
    # backbone, or a learner that is not meta-trained. Inner steps: the
    # algorithm's own check.
    for key in ("val_tasks", "num_steps"):
        if int(config[key]) < 0:
            raise ValueError(f"--{key} must be >= 0, got {config[key]}")
    if not 0.0 <= config["noisy_task_fraction"] <= 1.0:
        raise ValueError(
            f"--noisy_task_fraction must be in [0, 1], got {config['noisy_task_fraction']}"
        )
    if config["rotations"] not in ROTATIONS:
        raise ValueError(
            f"--rotations must be one of {ROTATIONS}, got {config['rotations']!r}"
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
    algorithm.check_config(config)
    _check_embeddings_and_leo(config)
    _check_omniglot_split(config)
    if config.get("pretrained_backbone"):
        _check_pretrained_backbone(config)


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
    embeddings = config["dataset"] == "embeddings"
    if embeddings != (model in ("linear", "leo")):
        raise ValueError(
            f"--model={model} does not fit --dataset={config['dataset']}: embedding "
            "vectors take --model=linear (or leo with --algorithm=leo), images conv4, sinusoid mlp"
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
    sizes are checked once the data is read, by ``task_data``)."""
    from tfmeta.data import PROTOCOLS

    from .task_data import tasks_within_alphabet

    if config["dataset"] == "omniglot" and config["split_protocol"] not in PROTOCOLS:
        raise ValueError(
            f"--split_protocol must be one of {PROTOCOLS}, got {config['split_protocol']!r}"
        )
    tasks_within_alphabet(config)


def trained_workdir_config(workdir: str) -> dict[str, Any]:
    """The stored config of a training workdir that holds a checkpoint;
    otherwise a usage error saying what is missing (before any data or model
    is built)."""
    from tfmeta.training import Workdir

    run = Workdir(workdir)
    try:
        config = run.read_config()
    except (FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    if not run.has_checkpoint():
        raise app.UsageError(
            f"no checkpoint in {run.latest.directory} or {run.best.directory}: "
            "has this run saved one yet?"
        )
    return config
