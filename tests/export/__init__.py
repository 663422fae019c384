"""Tiny trained workdirs and their exports, built once per test session.

``trained_exports(root)`` trains MAML, FOMAML and Reptile for two steps on a
fake Omniglot archive (3-way, conv4 with 2 blocks of 8 filters), MAML on
sinusoids and LEO on fake embedding files (3-way, d=6), exports each with
``experiments.export.export_workdir`` and caches the result by ``root`` so
that test modules share it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import tensorflow as tf

from experiments.export import export_workdir, restore_learner
from tfmeta.configs import get_config
from tfmeta.configs.build import build_learner, build_model
from tfmeta.data import write_embedding_file
from tfmeta.data.tasks import task_sets
from tfmeta.training import Trainer, Workdir

N_WAY = 3
IMAGE_SIZE = 28
EMBEDDING_DIM = 6
OMNIGLOT_ALGORITHMS = ("maml", "fomaml", "reptile")


def omniglot_png(rng: np.random.Generator, size: int = 105) -> bytes:
    """A binary image like Omniglot's: white paper (255), a few black strokes (0)."""
    pixels = np.full((size, size, 1), 255, np.uint8)
    for _ in range(3):
        row, col = rng.integers(5, size - 25, size=2)
        length = rng.integers(8, 20)
        if rng.random() < 0.5:
            pixels[row : row + 3, col : col + length] = 0
        else:
            pixels[row : row + length, col : col + 3] = 0
    return tf.io.encode_png(pixels).numpy()


def fake_omniglot(
    root: pathlib.Path, alphabets=3, characters=10, drawers=4
) -> pathlib.Path:
    """images_background_small1.zip in the original layout, 105x105 binary PNGs."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(root / "images_background_small1.zip", "w") as archive:
        for a in range(alphabets):
            for c in range(characters):
                for d in range(drawers):
                    name = (
                        f"images_background_small1/Alphabet{a}/character{c + 1:02d}/"
                        f"{a:02d}{c:02d}_{d + 1:02d}.png"
                    )
                    archive.writestr(name, omniglot_png(rng))
    return root


def fake_embeddings(root: pathlib.Path, classes=5, per_class=6) -> pathlib.Path:
    """``<root>/toy/center/<split>_embeddings.npz`` in the LEO layout, d = EMBEDDING_DIM."""
    folder = root / "toy" / "center"
    for index, split in enumerate(("train", "val", "test")):
        rng = np.random.default_rng(index)
        labels = np.repeat(np.arange(classes), per_class)
        centers = rng.normal(size=(classes, EMBEDDING_DIM))
        vectors = centers[labels] + 0.3 * rng.normal(size=(len(labels), EMBEDDING_DIM))
        keys = [f"{n}-c{c}-c{c}_{n:03d}" for n, c in enumerate(labels)]
        write_embedding_file(
            str(folder / f"{split}_embeddings.npz"),
            np.array(keys),
            vectors.astype(np.float32),
            labels,
        )
    return root


def run_export_binary(*flags: str) -> subprocess.CompletedProcess:
    """``python -m experiments.export`` with ``flags`` in a fresh process,
    from the repository root; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "experiments.export", *flags],
        cwd=pathlib.Path(__file__).resolve().parents[2],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


DATASETS = ("omniglot", "embeddings", "sinusoid")  # in the order tests prefer them


def dataset_of(algorithm: str) -> str:
    """The first of ``DATASETS`` the algorithm has a config for (the data the
    registry-driven suites run it on)."""
    from tfmeta.configs import CONFIGS

    supported = [d for d in DATASETS if (algorithm, d) in CONFIGS]
    assert supported, f"{algorithm} has no config on any of {DATASETS}"
    return supported[0]


def tiny_config(algorithm: str, dataset: str, data_dir: str = "") -> dict:
    config = get_config(algorithm, dataset)
    config.update(
        data_dir=data_dir,
        meta_batch_size=2,
        num_steps=2,
        val_tasks=2,
        test_tasks=2,
        eval_batch_size=2,
        log_every=1,
        eval_every=1,
        checkpoint_every=1,
    )
    if dataset == "omniglot":
        config.update(
            n_way=N_WAY,
            k_shot=1,
            train_k_shot=None,
            train_n_way=None,  # protonet_omniglot's 60 > the fake's classes
            q_query=1,
            eval_q_query=2,
            rotations="none",
            split_protocol="random",
            image_size=IMAGE_SIZE,
            filters=8,
            depth=2,
        )
    elif dataset == "embeddings":
        config.update(
            embedding_dataset="toy",
            n_way=N_WAY,
            k_shot=2,
            q_query=2,
            eval_q_query=2,
            num_latents=4,
            inner_steps=2,
            eval_inner_steps=2,
            finetune_steps=2,
        )
    else:
        config.update(hidden=[8, 8], k_shot=5, q_query=5, eval_q_query=5)
    return config


def train_workdir(workdir: pathlib.Path, config: dict) -> pathlib.Path:
    """Trains ``config`` for its ``num_steps`` into ``workdir`` (config.json, best/, checkpoints/)."""
    data = task_sets(config)
    config = {**config, "data_source": data.split}
    Workdir(str(workdir)).write_config(config)
    learner = build_learner(config, build_model(config, data.input_shape))
    Trainer(
        learner,
        str(workdir),
        data.train,
        data.val,
        log_every=1,
        eval_every=1,
        checkpoint_every=1,
        print_fn=lambda line: None,
    ).train(config["num_steps"])
    return workdir


@dataclasses.dataclass(frozen=True)
class Exported:
    workdir: pathlib.Path
    export_dir: pathlib.Path
    path: pathlib.Path  # <export_dir>/<version>
    config: dict


@functools.cache
def trained_exports(root: pathlib.Path) -> dict[str, Exported]:
    """{"maml", "fomaml", "reptile" (Omniglot), "sinusoid" (MAML), "leo"} trained and
    exported under ``root``."""
    data_dir = fake_omniglot(root / "omniglot")
    runs = {a: tiny_config(a, "omniglot", str(data_dir)) for a in OMNIGLOT_ALGORITHMS}
    runs["sinusoid"] = tiny_config("maml", "sinusoid")
    embeddings = fake_embeddings(root / "embeddings")
    runs["leo"] = tiny_config("leo", "embeddings", str(embeddings))
    exports = {}
    for name, config in runs.items():
        workdir = train_workdir(root / "runs" / name, config)
        export_dir = root / "models" / name
        result = export_workdir(str(workdir), str(export_dir))
        exports[name] = Exported(
            workdir, export_dir, pathlib.Path(result["path"]), config
        )
    return exports


def in_memory_learner(exported: Exported, transductive: bool = False):
    """The run's learner restored from the best checkpoint, as the export was."""
    config = {**exported.config, "transductive": transductive}
    learner, _ = restore_learner(str(exported.workdir), config, "best")
    return learner


def embedding_episode(seed: int, n_way: int = N_WAY, k_shot: int = 2, queries: int = 5):
    """Random float32 embeddings ``[n_way * k_shot, d]``, labels, ``[queries, d]``."""
    rng = np.random.default_rng(seed)
    support_x = rng.normal(size=(n_way * k_shot, EMBEDDING_DIM)).astype(np.float32)
    support_y = np.repeat(np.arange(n_way), k_shot).astype(np.int32)
    query_x = rng.normal(size=(queries, EMBEDDING_DIM)).astype(np.float32)
    return support_x, support_y, query_x


def episode(seed: int, n_way: int = N_WAY, k_shot: int = 2, queries: int = 5):
    """Random float32 images ``[n_way * k_shot, 28, 28, 1]``, labels, ``[queries, 28, 28, 1]``."""
    rng = np.random.default_rng(seed)
    shape = (IMAGE_SIZE, IMAGE_SIZE, 1)
    support_x = rng.random((n_way * k_shot, *shape)).astype(np.float32)
    support_y = np.repeat(np.arange(n_way), k_shot).astype(np.int32)
    query_x = rng.random((queries, *shape)).astype(np.float32)
    return support_x, support_y, query_x
