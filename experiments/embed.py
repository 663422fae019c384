"""Trains a feature backbone on the meta-train classes, then writes LEO-format embeddings.

  python -m experiments.embed --output_dir=/tmp/tfmeta_runs/embeddings

The backbone (4 blocks of 3x3 conv, batch norm, ReLU, 2x2 max-pooling, then
flatten: 2*2*filters features for 28x28 images) is trained by ordinary
softmax classification over the meta-train classes only (Omniglot from
--data_dir or $TFMETA_OMNIGLOT_DIR, else tensorflow-datasets; the same class
split as ``experiments.train``), with the rotations by 90/180/270 degrees as
extra classes unless --rotations=none. Validation and test classes are never
seen in training. It then writes, in the layout of the published LEO
embeddings,

  <output_dir>/<embedding_dataset>/<embedding_crop>/{train,val,test}_embeddings.pkl

(dicts with "keys" "<n>-<class>-<image>", "embeddings" [n, d], "labels" [n]),
the training classes with their rotations, and ``embedding_info.json``: the
backbone, the split, the class token -> class name map, the classification
accuracy, and the nearest-centroid accuracy of 5-way tasks on val and test
(a baseline needing no meta-learning). Then:

  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --data_dir=/tmp/tfmeta_runs/embeddings --workdir=/tmp/tfmeta_runs/leo_omniglot

It also writes the trained network as a ``tfmeta.models.conv4(pooling="max")``
with its head over the meta-train classes, ``<output_dir>/backbone.weights.h5``
with ``backbone.json`` (architecture and split; ``tfmeta.training.backbone``):
an image learner on the same split starts from it with
``--pretrained_backbone=<output_dir>`` (and the same --filters, --depth,
--pooling=max, --image_size, --split_protocol, --split_seed).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfmeta import data as tfmeta_data
from tfmeta.data.augment import check_strength, distort
from tfmeta.data.class_images import ClassImages
from tfmeta.data.embeddings import INFO_FILE
from tfmeta.data.tasks import resolve_data_dir
from tfmeta.models import conv4
from tfmeta.models.conv import check_conv4
from tfmeta.training.backbone import save_backbone
from tfmeta.training.workdir import write_json

from . import InputError, checks, memory, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module (its
    functions, in tests or beside the training binary) registers no flags."""
    flags.DEFINE_string("output_dir", None, "Root of the embeddings layout (required).")
    flags.DEFINE_string(
        "data_dir", "", "Omniglot archives; default $TFMETA_OMNIGLOT_DIR, else tfds."
    )
    flags.DEFINE_string("embedding_dataset", "omniglot", "Dataset folder name.")
    flags.DEFINE_string("embedding_crop", "center", "Crop folder name.")
    flags.DEFINE_string(
        "split_protocol",
        "auto",
        "Omniglot class split: auto | lake | maml | random | alphabet.",
    )
    flags.DEFINE_integer(
        "split_seed", 0, "Seed of the class split (as experiments.train)."
    )
    flags.DEFINE_integer("image_size", 28, "Image side after resizing.")
    flags.DEFINE_enum(
        "rotations", "train", ["train", "none"], "Rotated training classes."
    )
    flags.DEFINE_integer("filters", 64, "Conv filters per block.")
    flags.DEFINE_integer("depth", 4, "Conv blocks.")
    flags.DEFINE_integer("epochs", 20, "Training epochs over the meta-train images.")
    flags.DEFINE_integer(
        "max_steps", 0, "If > 0: train this many batches instead of --epochs."
    )
    flags.DEFINE_integer("batch_size", 128, "Training batch size.")
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
    flags.DEFINE_float(
        "augment",
        0.0,
        "Strength of the small random affine distortions of each training "
        "image (tfmeta.data.augment, as experiments.train's --augment; 0: none).",
    )
    flags.DEFINE_integer("seed", 0, "Seed of initialization and batch order.")
    flags.DEFINE_enum("format", "pkl", ["pkl", "npz"], "File format.")
    flags.DEFINE_integer(
        "eval_tasks", 600, "Tasks per split and shot of the nearest-centroid check."
    )


SPLITS = ("train", "val", "test")


def backbone(
    input_shape: tuple[int, ...], filters: int = 64, depth: int = 4, seed: int = 0
) -> keras.Sequential:
    """Images ``[batch, H, W, C]`` -> features ``[batch, d]``, d = filters * (H / 2^depth)^2."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape)]
    for block in range(depth):
        # The layers of tfmeta.models.conv4(pooling="max"), by name; the
        # convolution needs no bias before batch norm (conv4's is set to 0).
        layers += [
            keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                use_bias=False,
                kernel_initializer=keras.initializers.HeNormal(seed=seed + block),
                name=f"conv{block}",
            ),
            keras.layers.BatchNormalization(name=f"norm{block}"),
            keras.layers.ReLU(name=f"relu{block}"),
            keras.layers.MaxPooling2D(2, padding="same", name=f"pool{block}"),
        ]
    layers.append(keras.layers.Flatten(name="flatten"))
    return keras.Sequential(layers, name="backbone")


def as_conv4(features: keras.Sequential, head: keras.layers.Dense) -> keras.Sequential:
    """The classifier ``head(features(x))`` as ``tfmeta.models.conv4(pooling="max")``:
    the same function of a batch normalized with its own statistics (batch norm
    in training mode; conv4's MetaBatchNorm always is), since conv{i}'s bias is
    0 and norm{i}'s gamma and beta are the trained ones (their running averages,
    which only ``embed`` uses, are dropped)."""
    depth = sum(
        1 for layer in features.layers if isinstance(layer, keras.layers.Conv2D)
    )
    model = conv4(
        int(head.units),
        input_shape=tuple(features.input_shape[1:]),
        filters=int(features.get_layer("conv0").filters),
        depth=depth,
        pooling="max",
        seed=0,  # every weight is set below
    )
    for block in range(depth):
        conv, norm = f"conv{block}", f"norm{block}"
        model.get_layer(conv).kernel.assign(features.get_layer(conv).kernel)
        model.get_layer(conv).bias.assign(np.zeros(model.get_layer(conv).bias.shape))
        model.get_layer(norm).gamma.assign(features.get_layer(norm).gamma)
        model.get_layer(norm).beta.assign(features.get_layer(norm).beta)
    model.get_layer("head").kernel.assign(head.kernel)
    model.get_layer("head").bias.assign(head.bias)
    return model


def with_rotations(classes: ClassImages) -> ClassImages:
    """Every class and its rotations by 90, 180, 270 degrees (counter-clockwise,
    as ``episode_dataset``'s rotation classes) as 4 classes."""
    names, arrays = [], []
    for index, name in enumerate(classes.class_names):
        images = classes.images_of(index)
        for quarter in range(4):
            names.append(name if quarter == 0 else f"{name}/rot{90 * quarter}")
            arrays.append(np.rot90(images, quarter, axes=(1, 2)))
    return ClassImages.from_list(names, arrays)


def class_labels(classes: ClassImages) -> np.ndarray:
    """int64 ``[total]``: the class index of every image."""
    return np.repeat(np.arange(classes.num_classes), classes.images_per_class)


def train_backbone(
    classes: ClassImages,
    *,
    filters: int,
    depth: int,
    epochs: int,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    augment: float = 0.0,
    verbose: int = 2,
) -> tuple[keras.Sequential, keras.layers.Dense, dict[str, float]]:
    """Softmax classification over ``classes``; returns the backbone, the
    classifier head and the last epoch's loss and accuracy (on the training
    images, distorted where ``augment`` > 0)."""
    keras.utils.set_random_seed(seed)
    features = backbone(classes.image_shape, filters, depth, seed)
    head = keras.layers.Dense(
        classes.num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + depth),
        name="head",
    )
    model = keras.Sequential([features, head])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    total = len(classes.images)
    dataset = training_batches(classes, batch_size, seed, augment)
    steps = max_steps if max_steps > 0 else math.ceil(total / batch_size)
    history = model.fit(
        dataset,
        epochs=1 if max_steps > 0 else epochs,
        steps_per_epoch=steps,
        shuffle=False,  # the dataset is shuffled (seeded) above
        verbose=verbose,
        callbacks=[BatchProgress(steps)] if verbose else [],
    )
    return (
        features,
        head,
        {
            "loss": float(history.history["loss"][-1]),
            "accuracy": float(history.history["accuracy"][-1]),
        },
    )


def training_batches(
    classes: ClassImages, batch_size: int, seed: int, augment: float = 0.0
) -> tf.data.Dataset:
    """Endless shuffled ``(images, labels)`` batches of ``classes`` (seeded);
    with ``augment`` > 0 batch ``step`` is distorted under the stateless seed
    ``(seed, step)``, so the same run sees the same images."""
    dataset = (
        tf.data.Dataset.from_tensor_slices((classes.images, class_labels(classes)))
        .shuffle(len(classes.images), seed=seed, reshuffle_each_iteration=True)
        .repeat()
        .batch(batch_size)
    )
    if augment > 0:
        dataset = dataset.enumerate().map(
            lambda step, batch: (
                distort(
                    batch[0], tf.stack([tf.constant(seed, tf.int64), step]), augment
                ),
                batch[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


class BatchProgress(keras.callbacks.Callback):
    """One line every ``every`` batches of an epoch of ``steps`` (Keras' own
    line comes only at the epoch's end, minutes later on a CPU)."""

    def __init__(self, steps: int, every: int = 100):
        super().__init__()
        self.steps, self.every = steps, every
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1
        if done % self.every == 0 and done < self.steps:
            logs = logs or {}
            print(
                f"batch {done}/{self.steps}: loss {float(logs.get('loss', 0.0)):.4f} "
                f"accuracy {float(logs.get('accuracy', 0.0)):.4f} "
                f"({time.perf_counter() - self.start:.0f} s)",
                flush=True,
            )


def embed(
    features: keras.Model, images: np.ndarray, batch_size: int = 512
) -> np.ndarray:
    """float32 ``[n, d]`` features in inference mode (batch norm moving averages)."""
    return np.concatenate(
        [
            np.asarray(features(images[start : start + batch_size], training=False))
            for start in range(0, len(images), batch_size)
        ]
    ).astype(np.float32)


def split_keys(classes: ClassImages, split: str) -> tuple[list[str], dict[str, str]]:
    """Keys ``"<n>-<class>-<class>_<image>"`` (class tokens like ``val0003``: no '-'
    or '_', which the format reserves) and the token -> class name map."""
    tokens = [f"{split}{index:04d}" for index in range(classes.num_classes)]
    keys = [
        f"{n}-{tokens[c]}-{tokens[c]}_{image:03d}"
        for n, (c, image) in enumerate(
            (c, image)
            for c, count in enumerate(classes.images_per_class)
            for image in range(count)
        )
    ]
    return keys, dict(zip(tokens, classes.class_names))


def nearest_centroid_accuracy(
    classes: ClassImages, n_way: int, k_shot: int, tasks: int, seed: int
) -> float:
    """Mean accuracy of classifying queries by the nearest class mean (L2-normalized
    embeddings) over ``tasks`` N-way K-shot tasks with 15 queries per class, or
    fewer if the classes are small."""
    q_query = min(15, int(classes.images_per_class.min()) - k_shot)
    normalized = ClassImages(
        classes.images
        / np.linalg.norm(classes.images, axis=1, keepdims=True).clip(1e-6),
        classes.class_offsets,
        classes.class_names,
    )
    batch = next(
        iter(
            tfmeta_data.episode_dataset(
                normalized, n_way, k_shot, q_query, tasks, seed, num_episodes=1
            )
        )
    )
    support = batch.support_x.numpy().reshape(tasks, n_way, k_shot, -1).mean(axis=2)
    query = batch.query_x.numpy()
    distances = np.sum((query[:, :, None, :] - support[:, None, :, :]) ** 2, axis=-1)
    return float(np.mean(np.argmin(distances, axis=-1) == batch.query_y.numpy()))


def check_output_dir(output_dir: str, *subfolders: str) -> str:
    """``output_dir/<subfolders>`` (expanded); NotADirectoryError, naming the
    file, if it or a folder on its way is an existing file, PermissionError
    if it cannot be written (``checks.check_output_folder``)."""
    root = checks.check_output_folder(output_dir, "output_dir")
    folder = os.path.join(root, *subfolders)
    checks.check_output_folder(folder, "output_dir", output_dir)
    return folder


def check_embed_config(config: dict[str, Any]) -> None:
    """Raises ValueError naming the first setting that cannot work (and
    ``check_output_dir``'s errors), before any data is read."""
    check_conv4(int(config["filters"]), int(config["depth"]), "max")
    try:
        check_strength(config["augment"])
    except ValueError as error:
        raise ValueError(f"--{error}") from None
    for name in ("image_size", "batch_size", "eval_tasks"):
        if int(config[name]) < 1:
            raise ValueError(f"--{name} must be >= 1, got {config[name]}")
    if int(config["max_steps"]) < 0:
        raise ValueError(f"--max_steps must be >= 0, got {config['max_steps']}")
    if int(config["max_steps"]) == 0 and int(config["epochs"]) < 1:
        raise ValueError(
            f"--epochs must be >= 1 (or --max_steps > 0), got {config['epochs']}"
        )
    rate = config["learning_rate"]
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"--learning_rate must be a finite number > 0, got {rate}")
    if config["split_protocol"] not in tfmeta_data.PROTOCOLS:
        raise ValueError(
            f"--split_protocol must be one of {tfmeta_data.PROTOCOLS}, "
            f"got {config['split_protocol']!r}"
        )
    for name in ("embedding_dataset", "embedding_crop"):
        value = config[name]
        if not value or value in (".", "..") or "/" in value or os.sep in value:
            raise ValueError(
                f"--{name} must be one folder's name (the layout "
                f"<output_dir>/<embedding_dataset>/<embedding_crop>), got {value!r}"
            )
    check_output_dir(
        config["output_dir"], config["embedding_dataset"], config["embedding_crop"]
    )


def check_batch_memory(config: dict[str, Any], classes: ClassImages) -> None:
    """Raises ValueError where a training batch (its images and one forward
    pass's activations, ``memory``) cannot fit in this machine's memory."""
    side = int(classes.image_shape[0])
    batch = min(int(config["batch_size"]), len(classes.images))
    per_image = int(np.prod(classes.image_shape)) + memory.forward_numbers(
        {**config, "pooling": "max"}, "conv4", (side, side)
    )
    needed = batch * per_image * memory.BYTES_PER_NUMBER
    available = memory.machine_memory()
    if needed > available:
        raise ValueError(
            f"--batch_size={config['batch_size']}, --image_size={config['image_size']}, "
            f"--filters={config['filters']}: a training batch of {batch} images needs "
            f"at least {memory.format_bytes(needed)} of memory, more than this "
            f"machine's {memory.format_bytes(available)}"
        )


def write_embeddings(config: dict[str, Any]) -> dict[str, Any]:
    """Loads Omniglot, trains the backbone, writes the three splits and the
    backbone (``tfmeta.training.backbone``); returns the info."""
    folder = check_output_dir(
        config["output_dir"], config["embedding_dataset"], config["embedding_crop"]
    )
    data_dir = resolve_data_dir({"data_dir": config["data_dir"], "dataset": "omniglot"})
    protocol, split_seed = config["split_protocol"], config["split_seed"]
    try:  # a damaged archive, too few classes, too large a batch: the user's
        if data_dir:
            characters = tfmeta_data.load_omniglot_folder(
                data_dir, config["image_size"], max_bytes=memory.machine_memory()
            )
        else:
            characters = tfmeta_data.load_omniglot_tfds(image_size=config["image_size"])
        splits = tfmeta_data.split_omniglot(
            characters, protocol=protocol, seed=split_seed
        )
        if config["rotations"] == "train":
            splits["train"] = with_rotations(splits["train"])
        check_batch_memory(config, splits["train"])
    except ValueError as error:
        raise InputError(str(error)) from error
    start = time.perf_counter()
    features, head, training = train_backbone(
        splits["train"],
        filters=config["filters"],
        depth=config["depth"],
        epochs=config["epochs"],
        max_steps=config["max_steps"],
        batch_size=config["batch_size"],
        learning_rate=config["learning_rate"],
        seed=config["seed"],
        augment=config["augment"],
    )
    training["seconds"] = round(time.perf_counter() - start, 1)
    split = tfmeta_data.describe_split(characters, protocol=protocol, seed=split_seed)
    weights = save_backbone(
        as_conv4(features, head),
        os.path.expanduser(config["output_dir"]),
        {
            "filters": config["filters"],
            "depth": config["depth"],
            "pooling": "max",
            "image_size": config["image_size"],
            "channels": int(splits["train"].image_shape[-1]),
            "dataset": "omniglot",
            "split_protocol": protocol,
            "split_seed": split_seed,
            "data_source": split,  # the run's data_source, as experiments.train finds it
            "rotations": config["rotations"],
            "augment": config["augment"],
            "seed": config["seed"],
            "training": training,
        },
    )
    print(f"wrote {weights} (a conv4 with pooling=max)", flush=True)
    info: dict[str, Any] = {
        "source": f"Omniglot ({data_dir or 'tensorflow-datasets'}): {split}",
        "rotations": config["rotations"],
        "backbone": {
            key: config[key]
            for key in (
                "filters",
                "depth",
                "epochs",
                "max_steps",
                "batch_size",
                "learning_rate",
                "augment",
                "seed",
            )
        },
        "backbone_weights": weights,
        "training": training,
        "classes": {},
        "nearest_centroid_accuracy": {},
    }
    for split in SPLITS:
        vectors = embed(features, splits[split].images)
        keys, tokens = split_keys(splits[split], split)
        path = os.path.join(folder, f"{split}_embeddings.{config['format']}")
        tfmeta_data.write_embedding_file(
            path, keys, vectors, class_labels(splits[split])
        )
        info["classes"][split] = tokens
        info["embedding_dim"] = int(vectors.shape[1])
        if split != "train":
            embedded = ClassImages(
                vectors, splits[split].class_offsets, splits[split].class_names
            )
            info["nearest_centroid_accuracy"][split] = {
                f"5-way {k}-shot": nearest_centroid_accuracy(
                    embedded, 5, k, config["eval_tasks"], seed=1234
                )
                for k in (1, 5)
                if embedded.num_classes >= 5 and embedded.images_per_class.min() > k
            }
        print(
            f"wrote {path}: {len(vectors)} embeddings of {splits[split].num_classes} classes",
            flush=True,
        )
    write_json(os.path.join(folder, INFO_FILE), info)
    print(f"nearest-centroid accuracy: {info['nearest_centroid_accuracy']}", flush=True)
    return info


def main(argv):
    del argv
    if not FLAGS.output_dir:
        raise app.UsageError(
            "--output_dir is required (the root of the embeddings layout)"
        )
    config = {
        name: getattr(FLAGS, name)
        for name in (
            "output_dir",
            "data_dir",
            "embedding_dataset",
            "embedding_crop",
            "split_protocol",
            "split_seed",
            "image_size",
            "rotations",
            "filters",
            "depth",
            "epochs",
            "max_steps",
            "batch_size",
            "learning_rate",
            "augment",
            "seed",
            "format",
            "eval_tasks",
        )
    }
    try:
        check_embed_config(config)
    except (ValueError, *checks.FOLDER_ERRORS) as error:
        raise InputError(str(error)) from error
    try:
        write_embeddings(config)
    # No data (checked before any training): no traceback.
    except (FileNotFoundError, ConnectionError) as error:
        raise InputError(str(error)) from error


def run() -> None:
    """The console script ``tfmeta-embed``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
