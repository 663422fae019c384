"""Builds data, model and learner from a resolved config (shared by the binaries)."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from absl import app, logging

from tfmeta import data as tfmeta_data
from tfmeta import models
from tfmeta.algorithms import ALGORITHMS, get_algorithm
from tfmeta.core import Learner
from tfmeta.core.outer_optimizers import check_outer_optimizer, make_outer_optimizer

OMNIGLOT_ENV = "TFMETA_OMNIGLOT_DIR"
ROTATIONS = ("train", "all", "none")
MODELS = ("conv4", "mlp", "linear", "leo")
KL_ESTIMATORS = ("sample", "analytic")


@dataclasses.dataclass
class TaskData:
    """Episode streams of one run. ``train(start_step)`` is infinite; ``val()``
    and ``test()`` are fixed, finite sets of task batches."""

    train: Callable[[int], tf.data.Dataset]
    val: Callable[[], tf.data.Dataset]
    test: Callable[[], tf.data.Dataset]
    description: str
    input_shape: tuple[int, ...]
    split: str = ""  # the class split, without paths (stored with the run)


def resolve_data_dir(config: dict[str, Any]) -> str:
    """--data_dir, else $TFMETA_OMNIGLOT_DIR (omniglot only), else "" (tfds)."""
    if config["data_dir"]:
        return os.path.expanduser(config["data_dir"])
    if config["dataset"] == "omniglot":
        return os.environ.get(OMNIGLOT_ENV, "")
    return ""


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
        "num_steps",
        "test_tasks",
    ]
    for key in positive:
        if int(config[key]) < 1:
            raise ValueError(f"--{key} must be >= 1, got {config[key]}")
    for key in ("val_tasks",):  # inner steps: the algorithm's own check
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
    )
    algorithm.check_config(config)
    _check_embeddings_and_leo(config)


def model_name(config: dict[str, Any]) -> str:
    """--model, else leo (LEO), linear (embeddings), mlp (sinusoid) or conv4."""
    if config.get("model"):
        return config["model"]
    required = get_algorithm(config["algorithm"]).model
    if required:
        return required
    if config["dataset"] == "embeddings":
        return "linear"
    return "mlp" if config["dataset"] == "sinusoid" else "conv4"


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


def _episodes(
    classes,
    config,
    *,
    k_shot,
    q_query,
    batch,
    seed,
    rotations,
    num_episodes=None,
    noisy=0.0,
):
    def make(start_step: int = 0) -> tf.data.Dataset:
        dataset = tfmeta_data.episode_dataset(
            classes,
            n_way=config["n_way"],
            k_shot=k_shot,
            q_query=q_query,
            meta_batch_size=batch,
            seed=seed,
            rotations=rotations,
            start_episode=start_step,
            num_episodes=num_episodes,
        )
        return tfmeta_data.shuffle_task_labels(
            dataset, noisy, seed + 7919, start_episode=start_step
        )

    return make


def _fixed_count(tasks: int, batch: int) -> tuple[int, int]:
    """Batches of ``batch`` tasks covering ``tasks`` (rounded up to whole batches)."""
    batch = max(1, min(batch, tasks))
    return batch, -(-tasks // batch)


def _classification_data(
    splits: dict, config: dict[str, Any], description: str, split: str
) -> TaskData:
    train_k = config["train_k_shot"] or config["k_shot"]
    rotations = config["rotations"]
    train_rot, eval_rot = rotations in ("train", "all"), rotations == "all"
    n_way = config["n_way"]
    tfmeta_data.check_episode_spec(
        splits["train"], n_way, train_k, config["q_query"], rotations=train_rot
    )
    tfmeta_data.check_episode_spec(
        splits["test"],
        n_way,
        config["k_shot"],
        config["eval_q_query"],
        rotations=eval_rot,
    )
    if config["val_tasks"]:
        tfmeta_data.check_episode_spec(
            splits["val"],
            n_way,
            config["k_shot"],
            config["eval_q_query"],
            rotations=eval_rot,
        )
    val_batch, val_count = _fixed_count(
        max(1, config["val_tasks"]), config["eval_batch_size"]
    )
    test_batch, test_count = _fixed_count(
        config["test_tasks"], config["eval_batch_size"]
    )
    eval_kwargs = {
        "k_shot": config["k_shot"],
        "q_query": config["eval_q_query"],
        "rotations": eval_rot,
    }
    description += (
        f"; rotations: {'meta-train and meta-test' if eval_rot else 'meta-train only' if train_rot else 'none'}"
        f"; {n_way}-way {config['k_shot']}-shot test tasks with {config['eval_q_query']} queries per class"
    )
    return TaskData(
        train=_episodes(
            splits["train"],
            config,
            k_shot=train_k,
            q_query=config["q_query"],
            batch=config["meta_batch_size"],
            seed=config["seed"],
            rotations=train_rot,
            noisy=config["noisy_task_fraction"],
        ),
        val=lambda: _episodes(
            splits["val"],
            config,
            batch=val_batch,
            seed=config["test_seed"] + 1,
            num_episodes=val_count,
            **eval_kwargs,
        )(),
        test=lambda: _episodes(
            splits["test"],
            config,
            batch=test_batch,
            seed=config["test_seed"],
            num_episodes=test_count,
            **eval_kwargs,
        )(),
        description=description,
        input_shape=tuple(splits["train"].image_shape),
        split=split,
    )


def _omniglot(config: dict[str, Any]) -> TaskData:
    data_dir = resolve_data_dir(config)
    if data_dir:
        characters = tfmeta_data.load_omniglot_folder(
            data_dir, image_size=config["image_size"]
        )
        source = f"Omniglot files in {data_dir}"
    else:
        characters = tfmeta_data.load_omniglot_tfds(image_size=config["image_size"])
        source = "Omniglot from tensorflow-datasets"
    protocol, seed = config["split_protocol"], config["split_seed"]
    splits = tfmeta_data.split_omniglot(characters, protocol=protocol, seed=seed)
    split = tfmeta_data.describe_split(characters, protocol=protocol, seed=seed)
    return _classification_data(splits, config, f"{source}: {split}", split)


def _folder(config: dict[str, Any]) -> TaskData:
    root = os.path.expanduser(config["data_dir"])
    splits = {}
    for split in ("train", "val", "test"):
        path = os.path.join(root, split)
        if split == "val" and not os.path.isdir(path):
            if config["val_tasks"]:
                raise FileNotFoundError(
                    f"{path} does not exist: add a val/ folder or pass --val_tasks=0"
                )
            continue
        splits[split] = tfmeta_data.load_image_folder(
            path,
            image_size=(config["image_size"], config["image_size"]),
            channels=config["channels"],
        )
    counts = "/".join(str(splits[s].num_classes) for s in splits)
    split = f"{counts} classes ({'/'.join(splits)})"
    return _classification_data(
        splits, config, f"image folders in {root}: {split}", split
    )


def _sinusoid(config: dict[str, Any]) -> TaskData:
    k, q = config["k_shot"], config["q_query"]

    def make(seed, batch, query, num_episodes=None):
        return lambda start_step=0: tfmeta_data.sinusoid_dataset(
            k,
            query,
            batch,
            seed=seed,
            start_episode=start_step,
            num_episodes=num_episodes,
        )

    val_batch, val_count = _fixed_count(
        max(1, config["val_tasks"]), config["eval_batch_size"]
    )
    test_batch, test_count = _fixed_count(
        config["test_tasks"], config["eval_batch_size"]
    )
    return TaskData(
        train=make(config["seed"], config["meta_batch_size"], q),
        val=make(config["test_seed"] + 1, val_batch, config["eval_q_query"], val_count),
        test=make(config["test_seed"], test_batch, config["eval_q_query"], test_count),
        description=(
            f"sinusoid regression (amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]), K={k} support points, "
            f"{config['eval_q_query']} query points per test task"
        ),
        input_shape=(1,),
        split="sinusoid",
    )


def _embeddings(config: dict[str, Any]) -> TaskData:
    root = os.path.expanduser(config["data_dir"])
    name, crop = config["embedding_dataset"], config["embedding_crop"]
    splits = tfmeta_data.load_embedding_splits(root, name, crop)
    counts = "/".join(str(splits[s].num_classes) for s in ("train", "val", "test"))
    split = (
        f"{name}/{crop} embeddings (d={splits['train'].image_shape[0]}, L2-normalized): "
        f"{counts} classes (train/val/test)"
    )
    return _classification_data(splits, config, f"{split} in {root}", split)


def build_data(config: dict[str, Any]) -> TaskData:
    builders = {
        "omniglot": _omniglot,
        "folder": _folder,
        "sinusoid": _sinusoid,
        "embeddings": _embeddings,
    }
    data = builders[config["dataset"]](config)
    logging.info("data: %s", data.description)
    return data


def build_model(config: dict[str, Any], input_shape: tuple[int, ...]) -> keras.Model:
    model = model_name(config)
    if model == "leo":
        return models.leo_model(
            input_shape[0],
            num_latents=int(config["num_latents"]),
            inner_lr=config["inner_lr"],
            finetune_lr=config["finetune_lr"],
            seed=config["seed"],
        )
    if model == "linear":
        return models.linear_classifier(
            config["n_way"], input_shape[0], seed=config["seed"]
        )
    if config["dataset"] == "sinusoid":
        return models.mlp(
            output_dim=1,
            input_dim=1,
            hidden=tuple(config["hidden"]),
            seed=config["seed"],
        )
    return models.conv4(
        config["n_way"],
        input_shape=input_shape,
        filters=config["filters"],
        depth=config["depth"],
        pooling=config["pooling"],
        seed=config["seed"],
    )


def build_outer_optimizer(config: dict[str, Any]) -> keras.optimizers.Optimizer:
    return make_outer_optimizer(
        config["outer_optimizer"],
        config["outer_lr"],
        clip_norm=config["gradient_clip_norm"],
        # The schedule's length is fixed when the run starts (schedule_steps):
        # resuming with a larger num_steps does not rewrite the steps taken.
        schedule_steps=int(config.get("schedule_steps") or config["num_steps"]),
        final_lr=config["final_outer_lr"],
    )


def problem_of(config: dict[str, Any]) -> str:
    return "regression" if config["dataset"] == "sinusoid" else "classification"


def build_learner(config: dict[str, Any], model: keras.Model) -> Learner:
    algorithm = get_algorithm(config["algorithm"])
    return algorithm.build(
        config, model, build_outer_optimizer(config), problem_of(config)
    )


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
