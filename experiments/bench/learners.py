"""One benchmark configuration through the registry: its config, inputs,
model and learner, built as the training binary builds them.

An algorithm's config is, in order: ``tfmeta.configs.BASE``; the keys
the algorithm declares with their defaults (``Algorithm.defaults``); the
outer update of its own default training config (optimizer, rate, schedule
length and meta-gradient clipping: the runner's choice, e.g. Adam 1e-3 for
MAML, annealed SGD from epsilon = 1 for Reptile); then the benchmark's
settings. The task's shape (N, K, query, meta-batch) holds for every
algorithm; the other settings (inner steps, alpha, XLA, task execution,
inner-loop form, recompute) for the algorithms that declare the key, with a
note where one is passed to an algorithm that does not. A task execution
its learner does not declare is replaced by one it does, with a note. Then
``Algorithm.check_config`` checks the whole (the recompute rules:
``tfmeta.algorithms.MAML.check_arguments``) and ``Algorithm.build``
builds the learner.

Inputs are the yardstick's images where the algorithm has an Omniglot
config, else embedding vectors of ``--embedding_dim`` where it has an
embeddings config (an algorithm with neither has no row). The model is the
algorithm's own model kind if it declares one (``tfmeta.configs.build``'s
``build_model``), else the data's default network: the yardstick's max-pool
conv net for images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tfmeta.algorithms import ALGORITHMS, get_algorithm
from tfmeta.configs import BASE, CONFIGS, get_config
from tfmeta.configs.build import (
    build_model,
    build_outer_optimizer,
    model_name,
    problem_of,
)

from .settings import Settings
from .yardstick import IMAGE_SHAPE

TASK_KEYS = ("n_way", "k_shot", "q_query", "meta_batch_size")
ALGORITHM_KEYS = (
    "inner_steps",
    "inner_lr",
    "jit_compile",
    "task_execution",
    "unroll_inner_loop",
    "recompute",
    "recompute_steps",
)
OUTER_UPDATE_KEYS = (
    "outer_optimizer",
    "outer_lr",
    "final_outer_lr",
    "outer_lr_decay_steps",
    "outer_lr_decay_rate",
    "num_steps",  # the length of an annealed schedule
    "gradient_clip_norm",
    "gradient_clip_value",
    "gradient_clip_variable_norm",
)
# The datasets whose inputs the benchmark makes, in order of preference.
INPUT_DATASETS = {"omniglot": "images", "embeddings": "embedding vectors"}


@dataclasses.dataclass
class Configuration:
    """A resolved configuration; ``skip`` says why there is none."""

    algorithm: str
    config: dict[str, Any]
    input_shape: tuple[int, ...]
    notes: list[str]
    skip: str | None = None

    def describe(self) -> str:
        config = self.config
        model = model_name(config)
        if model == "conv4":
            model = f"max-pool conv4 ({config['filters']} filters)"
        else:
            model = f"model {model}"
        shape = "x".join(str(size) for size in self.input_shape)
        return (
            f"{self.algorithm}: {model} on random {shape} "
            f"{INPUT_DATASETS[config['dataset']]}, alpha {config['inner_lr']}, "
            f"outer {config['outer_optimizer']} {config['outer_lr']}"
        )


def registered() -> list[str]:
    return list(ALGORITHMS)


def resolve(name: str, settings: Settings) -> Configuration:
    """The configuration of algorithm ``name``; ValueError for a setting its
    check refuses (or an unknown name)."""
    algorithm = get_algorithm(name)
    datasets = [dataset for dataset in INPUT_DATASETS if (name, dataset) in CONFIGS]
    if not datasets:
        reason = f"no config on {' or '.join(INPUT_DATASETS)}, the benchmark's inputs"
        return Configuration(name, {}, (), [], skip=reason)
    dataset = datasets[0]
    own = get_config(name, dataset)
    config = {**BASE, **algorithm.defaults}
    config.update({key: own[key] for key in OUTER_UPDATE_KEYS})
    config.update(algorithm=name, dataset=dataset, filters=settings.filters)
    if "transductive" in config:
        # The yardstick normalizes every batch by its own statistics: the
        # same computation is timed (the fused kernel where it applies).
        config["transductive"] = True
    config.update({key: getattr(settings, key) for key in TASK_KEYS})
    notes = []
    for key in ALGORITHM_KEYS:
        value = getattr(settings, key)
        if value is None or value == config[key]:
            continue
        if key in algorithm.defaults:
            config[key] = value
        else:
            notes.append(f"{key}={value} is not one of its settings: ignored")
    executions = algorithm.learner.task_executions
    if config["task_execution"] not in executions:
        notes.append(
            f"its learner runs task_execution {list(executions)}, not "
            f"{config['task_execution']!r}: runs {executions[0]}"
        )
        config["task_execution"] = executions[0]
    try:
        algorithm.check_config(config, problem_of(config))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from error
    shape = IMAGE_SHAPE if dataset == "omniglot" else (settings.embedding_dim,)
    return Configuration(name, config, shape, notes)


def plan(names: list[str] | tuple[str, ...], settings: Settings) -> dict[str, Any]:
    """What the driver needs of each algorithm (``names``; none: every
    registered one), or ``{"error": message}`` for a setting refused by an
    algorithm named in ``names`` (of every registered one, such an algorithm
    is skipped with the reason)."""
    entries = []
    for name in names or registered():
        try:
            configuration = resolve(name, settings)
        except ValueError as error:
            if names:
                return {"error": str(error)}
            configuration = Configuration(name, {}, (), [], skip=str(error))
        entry = {
            "algorithm": name,
            "skip": configuration.skip,
            "notes": configuration.notes,
        }
        if not configuration.skip:
            declared = get_algorithm(name).defaults
            entry["description"] = configuration.describe()
            entry["inner_lr"] = configuration.config["inner_lr"]
            entry["settings"] = [key for key in ALGORITHM_KEYS if key in declared]
        entries.append(entry)
    return {"algorithms": entries}


def conv_network(n_way: int, filters: int, fused_batch_norm: bool = True):
    """The yardstick's network: max-pool conv4, seeded."""
    from tfmeta.models import conv4

    return conv4(
        n_way,
        IMAGE_SHAPE,
        filters=filters,
        pooling="max",
        seed=0,
        fused_batch_norm=fused_batch_norm,
    )


def random_episode(
    meta_batch_size: int,
    n_way: int,
    k_shot: int,
    q_query: int,
    example_shape: tuple[int, ...] = IMAGE_SHAPE,
) -> tuple:
    """A seeded random episode (timing does not depend on the values):
    support ``[tasks, N*K, *example_shape]``, query ``[tasks, N*Q, ...]``."""
    import numpy as np
    import tensorflow as tf

    b, n, k, q = meta_batch_size, n_way, k_shot, q_query
    rng = np.random.default_rng(0)
    return (
        tf.constant(rng.standard_normal((b, n * k, *example_shape)), tf.float32),
        tf.constant(np.tile(np.repeat(np.arange(n), k), (b, 1)), tf.int32),
        tf.constant(rng.standard_normal((b, n * q, *example_shape)), tf.float32),
        tf.constant(np.tile(np.repeat(np.arange(n), q), (b, 1)), tf.int32),
    )


def episode(configuration: Configuration) -> tuple:
    config = configuration.config
    return random_episode(
        *(config[key] for key in ("meta_batch_size", "n_way", "k_shot", "q_query")),
        configuration.input_shape,
    )


def build_learner(configuration: Configuration, settings: Settings):
    """The model and, through the registry, the learner."""
    config = configuration.config
    if model_name(config) == "conv4":  # the data's default network for images
        model = conv_network(
            config["n_way"], config["filters"], settings.fused_batch_norm
        )
    else:
        model = build_model(config, configuration.input_shape)
    algorithm = get_algorithm(configuration.algorithm)
    return algorithm.build(
        config, model, build_outer_optimizer(config), problem_of(config)
    )
