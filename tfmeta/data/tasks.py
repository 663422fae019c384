"""Task sets: the meta-training, -validation and fixed meta-test episode
streams of a config (``tfmeta.configs.get_config``), on Omniglot (files or
tensorflow-datasets, every split protocol, rotations, augmentation), image
folders, sinusoid or embeddings, exactly as the binaries draw them.

  config = tfmeta.configs.get_config("protonet", "omniglot", n_way=5)
  tasks = tfmeta.data.tasks(config)
  tasks.train()  # an endless stream of meta-batches (from step 0)
  tasks.test()   # the fixed test tasks (test_tasks of them, seed test_seed)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from absl import logging

from tfmeta import data as tfmeta_data
from tfmeta.algorithms import get_algorithm
from tfmeta.runtime import machine_memory

OMNIGLOT_ENV = "TFMETA_OMNIGLOT_DIR"


@dataclasses.dataclass
class TaskSets:
    """The episode streams of one config. ``train(start_step=0)`` is endless
    (the same meta-batches from any step on, as a resumed run draws them);
    ``val()`` and ``test()`` are fixed, finite sets of task batches. Each
    element: (support_x, support_y, query_x, query_y), a meta-batch of tasks.
    ``input_shape``: one example's shape (what ``tfmeta.configs.build_learner``
    builds the model for); ``description``: the data, split and protocol.
    ``test_groups()``: where every task's classes come from one group (an
    alphabet), the group of each test task in ``test()``'s order; else None."""

    train: Callable[[int], tf.data.Dataset]
    val: Callable[[], tf.data.Dataset]
    test: Callable[[], tf.data.Dataset]
    description: str
    input_shape: tuple[int, ...]
    split: str = ""  # the class split, without paths (stored with the run)
    test_groups: Callable[[], list[str]] | None = None


def resolve_data_dir(config: dict[str, Any]) -> str:
    """--data_dir, else $TFMETA_OMNIGLOT_DIR (omniglot only), else "" (tfds)."""
    if config["data_dir"]:
        return os.path.expanduser(config["data_dir"])
    if config["dataset"] == "omniglot":
        return os.environ.get(OMNIGLOT_ENV, "")
    return ""


def _episodes(
    classes,
    config,
    *,
    n_way,
    k_shot,
    q_query,
    batch,
    seed,
    rotations,
    num_episodes=None,
    noisy=0.0,
    class_groups=None,
    augment=0.0,
):
    def make(start_step: int = 0) -> tf.data.Dataset:
        dataset = tfmeta_data.episode_dataset(
            classes,
            n_way=n_way,
            k_shot=k_shot,
            q_query=q_query,
            meta_batch_size=batch,
            seed=seed,
            rotations=rotations,
            start_episode=start_step,
            num_episodes=num_episodes,
            class_groups=class_groups,
            augment=augment,
        )
        return tfmeta_data.shuffle_task_labels(
            dataset, noisy, seed + 7919, start_episode=start_step
        )

    return make


def _fixed_count(tasks: int, batch: int) -> tuple[int, int]:
    """Batches of ``batch`` tasks covering ``tasks`` (rounded up to whole batches)."""
    batch = max(1, min(batch, tasks))
    return batch, -(-tasks // batch)


def eval_batch_tasks(config: dict[str, Any]) -> int:
    """Tasks in one evaluation batch: eval_batch_size, or all of a smaller
    meta-validation or meta-test set ."""
    tasks = max(int(config["test_tasks"]), int(config["val_tasks"]))
    return min(int(config["eval_batch_size"]), tasks)


def train_n_way(config: dict[str, Any]) -> int:
    """Classes per meta-training task: ``train_n_way`` (an algorithm that
    declares it classifies any number of classes, e.g. by prototypes), else
    ``n_way``. ValueError for an algorithm whose head fixes the way."""
    value = config.get("train_n_way")
    if not value:
        return int(config["n_way"])
    algorithm = config.get("algorithm")
    if algorithm and "train_n_way" not in get_algorithm(algorithm).defaults:
        raise ValueError(
            f"train_n_way={value} applies to the algorithms that classify any number "
            f"of classes (protonet, nearest_centroid): {algorithm} trains at n_way"
        )
    return int(value)


def tasks_within_alphabet(config: dict[str, Any]) -> bool:
    """Whether every task's classes come from one alphabet: ``tasks_within_alphabet``,
    by default on with ``split_protocol=alphabet``. ValueError off Omniglot and
    its embeddings."""
    value = config.get("tasks_within_alphabet")
    if value is None:
        return (
            config["dataset"] == "omniglot"
            and config.get("split_protocol") == "alphabet"
        )
    if value and config["dataset"] not in ("omniglot", "embeddings"):
        raise ValueError(
            "tasks_within_alphabet needs --dataset=omniglot or embeddings of it "
            f"(classes Alphabet/characterNN), got --dataset={config['dataset']}"
        )
    return bool(value)


def _classification_data(
    splits: dict,
    config: dict[str, Any],
    description: str,
    split: str,
    groups: dict[str, tuple[str, ...]] | None = None,
) -> TaskSets:
    """``groups``: the alphabet of each class per split, for tasks within one alphabet."""
    train_k = config["train_k_shot"] or config["k_shot"]
    rotations = config["rotations"]
    train_rot, eval_rot = rotations in ("train", "all"), rotations == "all"
    n_way, train_n = config["n_way"], train_n_way(config)
    groups = groups or {}
    if groups:
        for name, n, rotated in (
            ("train", train_n, train_rot),
            ("val", n_way, eval_rot),
            ("test", n_way, eval_rot),
        ):
            if name != "val" or config["val_tasks"]:
                tfmeta_data.check_tasks_within_alphabet(
                    splits[name], n, rotated, split=name
                )
    tfmeta_data.check_episode_spec(
        splits["train"],
        train_n,
        train_k,
        config["q_query"],
        rotations=train_rot,
        class_groups=groups.get("train"),
    )
    tfmeta_data.check_episode_spec(
        splits["test"],
        n_way,
        config["k_shot"],
        config["eval_q_query"],
        rotations=eval_rot,
        class_groups=groups.get("test"),
    )
    if config["val_tasks"]:
        tfmeta_data.check_episode_spec(
            splits["val"],
            n_way,
            config["k_shot"],
            config["eval_q_query"],
            rotations=eval_rot,
            class_groups=groups.get("val"),
        )
    val_batch, val_count = _fixed_count(
        max(1, config["val_tasks"]), config["eval_batch_size"]
    )
    test_batch, test_count = _fixed_count(
        config["test_tasks"], config["eval_batch_size"]
    )
    eval_kwargs = {
        "n_way": n_way,
        "k_shot": config["k_shot"],
        "q_query": config["eval_q_query"],
        "rotations": eval_rot,
    }
    description += (
        f"; rotations: {'meta-train and meta-test' if eval_rot else 'meta-train only' if train_rot else 'none'}"
        f"; {n_way}-way {config['k_shot']}-shot test tasks with {config['eval_q_query']} queries per class"
    )
    if train_n != n_way:
        description += f"; {train_n}-way meta-training tasks"
    if groups:
        description += "; every task's classes from one alphabet (train, val and test)"
    return TaskSets(
        train=_episodes(
            splits["train"],
            config,
            n_way=train_n,
            k_shot=train_k,
            q_query=config["q_query"],
            batch=config["meta_batch_size"],
            seed=config["seed"],
            rotations=train_rot,
            noisy=config["noisy_task_fraction"],
            class_groups=groups.get("train"),
            augment=config["augment"],
        ),
        val=lambda: _episodes(
            splits["val"],
            config,
            batch=val_batch,
            seed=config["test_seed"] + 1,
            num_episodes=val_count,
            class_groups=groups.get("val"),
            **eval_kwargs,
        )(),
        test=lambda: _episodes(
            splits["test"],
            config,
            batch=test_batch,
            seed=config["test_seed"],
            num_episodes=test_count,
            class_groups=groups.get("test"),
            **eval_kwargs,
        )(),
        description=description,
        input_shape=tuple(splits["train"].image_shape),
        split=split,
        test_groups=(
            lambda: tfmeta_data.task_groups(
                groups["test"],
                n_way,
                config["test_seed"],
                test_batch * test_count,
                rotations=eval_rot,
            )
        )
        if groups
        else None,
    )


def _omniglot(config: dict[str, Any]) -> TaskSets:
    data_dir = resolve_data_dir(config)
    if data_dir:
        characters = tfmeta_data.load_omniglot_folder(
            data_dir,
            image_size=config["image_size"],
            max_bytes=machine_memory(),
        )
        source = f"Omniglot files in {data_dir}"
    else:
        characters = tfmeta_data.load_omniglot_tfds(image_size=config["image_size"])
        source = "Omniglot from tensorflow-datasets"
    protocol, seed = config["split_protocol"], config["split_seed"]
    splits = tfmeta_data.split_omniglot(characters, protocol=protocol, seed=seed)
    split = tfmeta_data.describe_split(characters, protocol=protocol, seed=seed)
    groups = None
    if tasks_within_alphabet(config):
        groups = {name: tfmeta_data.alphabets_of(c) for name, c in splits.items()}
    return _classification_data(splits, config, f"{source}: {split}", split, groups)


def _folder(config: dict[str, Any]) -> TaskSets:
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
            max_bytes=machine_memory(),
        )
    counts = "/".join(str(splits[s].num_classes) for s in splits)
    split = f"{counts} classes ({'/'.join(splits)})"
    return _classification_data(
        splits, config, f"image folders in {root}: {split}", split
    )


def _sinusoid(config: dict[str, Any]) -> TaskSets:
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
    return TaskSets(
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


def _embeddings(config: dict[str, Any]) -> TaskSets:
    root = os.path.expanduser(config["data_dir"])
    name, crop = config["embedding_dataset"], config["embedding_crop"]
    splits = tfmeta_data.load_embedding_splits(root, name, crop)
    counts = "/".join(str(splits[s].num_classes) for s in ("train", "val", "test"))
    split = (
        f"{name}/{crop} embeddings (d={splits['train'].image_shape[0]}, L2-normalized): "
        f"{counts} classes (train/val/test)"
    )
    groups = None
    if tasks_within_alphabet(config):
        splits = tfmeta_data.name_embedding_classes(root, name, crop, splits)
        groups = {s: tfmeta_data.alphabets_of(c) for s, c in splits.items()}
    return _classification_data(splits, config, f"{split} in {root}", split, groups)


def task_sets(config: dict[str, Any]) -> TaskSets:
    """The task sets of ``config`` (a dict of ``tfmeta.configs.get_config``).
    Reads the data: FileNotFoundError or ValueError (one line) for missing
    files or too few classes or examples for the tasks."""
    train_n_way(config)  # settings refused before any data is read
    tasks_within_alphabet(config)
    readers = {
        "omniglot": _omniglot,
        "folder": _folder,
        "sinusoid": _sinusoid,
        "embeddings": _embeddings,
    }
    data = readers[config["dataset"]](config)
    logging.info("data: %s", data.description)
    return data
