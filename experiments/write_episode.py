"""Writes one held-out meta-test task of a trained run as image files, the
layout ``experiments.serve_client`` sends to an exported model.

  python -m experiments.write_episode --workdir=/tmp/tfmeta_runs/quickstart \
      --out_dir=/tmp/tfmeta_runs/episode [--task=0]

Draws task ``--task`` of the run's fixed meta-test tasks (the classes it
never trained on) from the run's own data and writes
``<out_dir>/support/<class>/<n>.png`` (class folders ``class_00``,
``class_01``, ... in the order of the task's labels) and
``<out_dir>/query/<n>_class_<label>.png`` (the true class in the name, for
reading the client's answers), and ``<out_dir>/labels.json``. The images are
the network's inputs written back as 8-bit grayscale or RGB PNGs (Omniglot:
black strokes on white, as the originals), which the export's image
signature decodes and preprocesses as in training.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from tfmeta.data.tasks import task_sets

from . import InputError, checks, configure_runtime, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module registers no flags."""
    flags.DEFINE_string("workdir", None, "the trained run's folder (its config.json)")
    flags.DEFINE_string(
        "out_dir", None, "where support/, query/ and labels.json are written"
    )
    flags.DEFINE_integer("task", 0, "which of the run's meta-test tasks (0-based)")


def to_png_pixels(image: np.ndarray, dataset: str) -> np.ndarray:
    """A network input ``[H, W, C]`` in [0, 1] as uint8 pixels; Omniglot's
    inputs are inverted (strokes 1.0), so they are inverted back."""
    pixels = 1.0 - image if dataset == "omniglot" else image
    return np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)


def first_task(config: dict, task: int):
    """(support_x, support_y, query_x, query_y) of meta-test task ``task``."""
    data = task_sets(config)
    index = 0
    for batch in data.test():
        support_x, support_y, query_x, query_y = (t.numpy() for t in batch)
        for i in range(len(support_x)):
            if index == task:
                return support_x[i], support_y[i], query_x[i], query_y[i]
            index += 1
    raise InputError(
        f"--task {task}: the run has {index} meta-test tasks (test_tasks {config['test_tasks']})"
    )


def write_episode(out_dir: str, support_x, support_y, query_x, query_y, dataset: str):
    """Writes the task's PNGs and labels.json; returns the labels written."""
    import tensorflow as tf

    def write(path: str, image: np.ndarray) -> None:
        png = tf.io.encode_png(to_png_pixels(image, dataset)).numpy()
        with open(path, "wb") as f:
            f.write(png)

    width = 2 if int(support_y.max()) < 100 else 3
    for n, (image, label) in enumerate(zip(support_x, support_y)):
        folder = os.path.join(out_dir, "support", f"class_{int(label):0{width}d}")
        os.makedirs(folder, exist_ok=True)
        write(os.path.join(folder, f"{n:03d}.png"), image)
    os.makedirs(os.path.join(out_dir, "query"), exist_ok=True)
    queries = {}
    for n, (image, label) in enumerate(zip(query_x, query_y)):
        name = f"{n:03d}_class_{int(label):0{width}d}.png"
        write(os.path.join(out_dir, "query", name), image)
        queries[name] = int(label)
    labels = {
        "support_classes": sorted({int(y) for y in support_y}),
        "queries": queries,
    }
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(labels, f, indent=1)
    return labels


def main(argv):
    del argv
    if not FLAGS.workdir or not FLAGS.out_dir:
        raise InputError("--workdir and --out_dir are required")
    if FLAGS.task < 0:
        raise InputError(f"--task must be >= 0, got {FLAGS.task}")
    config = checks.trained_workdir_config(FLAGS.workdir)
    if config["dataset"] in ("sinusoid", "embeddings"):
        raise InputError(
            f"the run's data ({config['dataset']}) has no images: send arrays to the "
            "adapt_and_predict signature (tfmeta.serving.rest_body) instead"
        )
    for part in ("support", "query"):
        if os.path.exists(os.path.join(FLAGS.out_dir, part)):
            raise InputError(
                f"--out_dir {FLAGS.out_dir} already holds {part}/: choose a new folder"
            )
    try:
        checks.check_output_folder(FLAGS.out_dir, "out_dir")
    except checks.FOLDER_ERRORS as error:
        raise InputError(str(error)) from error
    configure_runtime("auto", "cores", False)
    config = {**config, "test_tasks": max(config["test_tasks"], FLAGS.task + 1)}
    try:
        task = first_task(config, FLAGS.task)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise InputError(str(error)) from error
    labels = write_episode(FLAGS.out_dir, *task, config["dataset"])
    print(
        f"wrote meta-test task {FLAGS.task} of {FLAGS.workdir}: "
        f"{len(task[0])} support images in {len(labels['support_classes'])} class folders "
        f"under {os.path.join(FLAGS.out_dir, 'support')}, {len(task[2])} queries in "
        f"{os.path.join(FLAGS.out_dir, 'query')} (true classes in their names and labels.json)"
    )


def run() -> None:
    """The console script ``tfmeta-write-episode``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
