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

from experiments import (
    CPU_THREADING_MODES,
    recompute_steps_error,
    resolve_malloc_arenas,
)
from tfmeta import data as tfmeta_data
from tfmeta import models
from tfmeta.algorithms import (
    annealed_outer_optimizer,
    get_algorithm,
    make_inner_optimizer,
)
from tfmeta.algorithms.base import TASK_EXECUTIONS, MetaLearner

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


def resolve_cpu_threading(mode: str, jit_compile: bool) -> str:
    """The binaries' ``--cpu_threading``: "auto" is "ops" for an XLA-compiled
    step (one computation, threaded by XLA) and "tasks" otherwise."""
    if mode not in CPU_THREADING_MODES:
        raise ValueError(
            f"--cpu_threading must be one of {CPU_THREADING_MODES}, got {mode!r}"
        )
    if mode == "auto":
        return "ops" if jit_compile else "tasks"
    return mode


def set_malloc_arenas(value: str) -> None:
    """``tfmeta.set_malloc_arenas`` with ``--malloc_arenas`` resolved, logged."""
    import tfmeta

    count = resolve_malloc_arenas(value)
    if count is None:
        return
    if tfmeta.set_malloc_arenas(count):
        logging.info("malloc arenas: at most %d", count)
    else:
        logging.warning(
            "--malloc_arenas=%s: the C library is not glibc; ignored", value
        )


def set_cpu_threading(mode: str, jit_compile: bool) -> None:
    """``tfmeta.set_cpu_threading`` with ``--cpu_threading`` resolved, logged;
    if TensorFlow has already started (the binary called from a program), a
    warning and its current settings."""
    import tfmeta

    mode = resolve_cpu_threading(mode, jit_compile)
    try:
        tfmeta.set_cpu_threading(mode)
    except RuntimeError as error:
        logging.warning("%s; keeping TensorFlow's current thread settings", error)
        return
    logging.info(
        "CPU threading %s: intra_op %d, inter_op %d thread(s) (0: TensorFlow's choice)",
        mode,
        tf.config.threading.get_intra_op_parallelism_threads(),
        tf.config.threading.get_inter_op_parallelism_threads(),
    )


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
    get_algorithm(config["algorithm"])
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
    for key in ("inner_steps", "eval_inner_steps", "val_tasks"):
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
    if config["inner_lr"] <= 0 or config["outer_lr"] <= 0:
        raise ValueError(
            f"learning rates must be > 0, got inner_lr={config['inner_lr']}, outer_lr={config['outer_lr']}"
        )
    if config.get("task_execution", "loop") not in TASK_EXECUTIONS:
        raise ValueError(
            f"--task_execution must be one of {TASK_EXECUTIONS}, got {config.get('task_execution')!r}"
        )
    if config.get("task_execution", "loop") != "loop" and config["algorithm"] == "leo":
        raise ValueError(
            "--algorithm=leo runs its tasks with --task_execution=loop only, got "
            f"{config.get('task_execution')!r}"
        )
    if config.get("recompute") and config["algorithm"] != "maml":
        raise ValueError(
            f"--recompute applies to second-order --algorithm=maml, not {config['algorithm']!r}"
        )
    error = recompute_steps_error(
        config.get("recompute_steps"),
        config.get("recompute", False),
        config.get("unroll_inner_loop", True),
    )
    if error:
        raise ValueError(error)
    _check_embeddings_and_leo(config)


def model_name(config: dict[str, Any]) -> str:
    """--model, else leo (LEO), linear (embeddings), mlp (sinusoid) or conv4."""
    if config.get("model"):
        return config["model"]
    if config["algorithm"] == "leo":
        return "leo"
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
    if (model == "leo") != (config["algorithm"] == "leo"):
        raise ValueError("--model=leo and --algorithm=leo go together")
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
    if config["algorithm"] != "leo":
        return
    if config["task_weighting"] != "uniform":
        raise ValueError(
            f"--algorithm=leo supports only --task_weighting=uniform, got {config['task_weighting']!r}"
        )
    if config["kl_estimator"] not in KL_ESTIMATORS:
        raise ValueError(
            f"--kl_estimator must be one of {KL_ESTIMATORS}, got {config['kl_estimator']!r}"
        )
    if not 0.0 <= config["dropout_rate"] < 1.0:
        raise ValueError(
            f"--dropout_rate must be in [0, 1), got {config['dropout_rate']}"
        )
    if (
        int(config["finetune_steps"]) < 0
        or not config["num_latents"]
        or int(config["num_latents"]) < 1
    ):
        raise ValueError(
            f"--finetune_steps must be >= 0 and --num_latents >= 1, got "
            f"{config['finetune_steps']} and {config['num_latents']}"
        )
    if config["finetune_lr"] <= 0:
        raise ValueError(f"--finetune_lr must be > 0, got {config['finetune_lr']}")


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
    name, lr, clip = (
        config["outer_optimizer"],
        config["outer_lr"],
        config["gradient_clip_norm"],
    )
    if name == "adam":
        return keras.optimizers.Adam(lr, global_clipnorm=clip)
    if name == "sgd":
        return keras.optimizers.SGD(lr, global_clipnorm=clip)
    if name == "annealed_sgd":
        # The schedule's length is fixed when the run starts (schedule_steps):
        # resuming with a larger num_steps does not rewrite the steps taken.
        return annealed_outer_optimizer(
            lr,
            config.get("schedule_steps") or config["num_steps"],
            config["final_outer_lr"],
        )
    raise ValueError(
        f"--outer_optimizer must be adam, sgd or annealed_sgd, got {name!r}"
    )


def build_learner(config: dict[str, Any], model: keras.Model) -> MetaLearner:
    algorithm = get_algorithm(config["algorithm"])
    if config["algorithm"] == "leo":
        return algorithm(
            model,
            build_outer_optimizer(config),
            n_way=config["n_way"],
            inner_steps=config["inner_steps"],
            finetune_steps=config["finetune_steps"],
            eval_inner_steps=config["eval_inner_steps"],
            kl_weight=config["kl_weight"],
            encoder_penalty_weight=config["encoder_penalty_weight"],
            l2_penalty_weight=config["l2_penalty_weight"],
            orthogonality_penalty_weight=config["orthogonality_penalty_weight"],
            dropout_rate=config["dropout_rate"],
            kl_estimator=config["kl_estimator"],
            deterministic=config["deterministic"],
            gradient_clip_value=config["gradient_clip_value"],
            gradient_clip_variable_norm=config["gradient_clip_variable_norm"],
            task_weighting=config["task_weighting"],
            jit_compile=config["jit_compile"],
            seed=config["seed"],
        )
    kwargs: dict[str, Any] = {
        "inner_lr": config["inner_lr"],
        "inner_steps": config["inner_steps"],
        "eval_inner_steps": config["eval_inner_steps"],
        "problem": "regression"
        if config["dataset"] == "sinusoid"
        else "classification",
        "adapt_variables": config["adapt_variables"],
        "transductive": config["transductive"],
        "task_weighting": config["task_weighting"],
        "jit_compile": config["jit_compile"],
        "task_execution": config.get("task_execution", "loop"),
        "unroll_inner_loop": config.get("unroll_inner_loop", True),
        "inner_optimizer": make_inner_optimizer(
            config["inner_optimizer"],
            config["inner_lr"],
            **(
                {"beta1": config["inner_beta1"]}
                if config["inner_optimizer"] == "adam"
                else {}
            ),
        ),
        "seed": config["seed"],
    }
    if config["algorithm"] == "reptile":
        kwargs.update(
            inner_batch_size=config["inner_batch_size"],
            eval_inner_batch_size=config["eval_inner_batch_size"],
        )
    if config["algorithm"] == "maml":
        kwargs["second_order_steps"] = config["second_order_steps"]
        kwargs["recompute"] = config["recompute"]
        kwargs["recompute_steps"] = config.get("recompute_steps")
    return algorithm(model, build_outer_optimizer(config), **kwargs)


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
