"""A generic `<root>/<class>/<image>` folder of images as `ClassImages`.

For a user's own data, or miniImageNet prepared from the Ravi and Larochelle
(2017) csv split files into `train/`, `val/` and `test/` folders, each loaded
with its own call.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from tfmeta.data.class_images import ClassImages, check_decoded_size
from tfmeta.errors import first_line


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (
        (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    )
    if len(size) != 2 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size
    ):
        raise ValueError(
            f"image_size must be a positive int or (height, width), got {image_size!r}."
        )
    return size


def _decode_and_resize(
    path: tf.Tensor, size: tuple[int, int], channels: int
) -> tf.Tensor:
    """Reads one image file -> float32 `[height, width, channels]` in [0, 1]."""
    return decode_and_resize_image(tf.io.read_file(path), size, channels)


def decode_and_resize_image(
    contents: tf.Tensor, size: tuple[int, int], channels: int
) -> tf.Tensor:
    """Encoded PNG/JPEG/GIF/BMP bytes -> float32 `[height, width, channels]` in [0, 1].

    Shrinking uses area averaging (no aliasing); enlarging uses bilinear
    interpolation (area would repeat pixels like nearest neighbour). The one
    decoding of the folder dataset, in training and in exported models.
    """
    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    image = tf.image.convert_image_dtype(
        image, tf.float32
    )  # uint8 / 255, uint16 / 65535.
    source_size = tf.shape(image)[:2]
    shrinking = tf.reduce_all(source_size >= tf.constant(size))
    image = tf.cond(
        shrinking,
        lambda: tf.image.resize(image, size, method="area"),
        lambda: tf.image.resize(image, size, method="bilinear"),
    )
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, [*size, channels])


def load_image_folder(
    root: str | pathlib.Path,
    image_size: int | Sequence[int] = (84, 84),
    channels: int = 3,
    extensions: Sequence[str] = (".png", ".jpg", ".jpeg"),
    max_bytes: int | None = None,
) -> ClassImages:
    """Loads every image of `<root>/<class>/<image>` into memory, decoded once.

    Class folders are the sub-folders of `root` (hidden ones skipped), sorted
    by name; images are the files with one of `extensions` (any case) directly
    inside a class folder, sorted by name. Values are float32 in [0, 1] (no
    inversion), resized with `tf.image.resize` (area when shrinking, bilinear
    when enlarging).

    Args:
      root: folder holding one sub-folder per class.
      image_size: output `(height, width)`, or one int for a square.
      channels: 1 (grayscale), 3 (RGB) or 4 (RGBA); images are converted.
      extensions: file name endings counted as images.
      max_bytes: refuse (ValueError) images that would need more memory
        decoded, before decoding them (None: no limit).

    Returns:
      `ClassImages` with images `[total_images, height, width, channels]` and
      class names equal to the folder names.

    Raises:
      FileNotFoundError: `root` is missing, holds no class folder, or a class
        folder holds no image (named in the message).
    """
    size = _image_size(image_size)
    if channels not in (1, 3, 4):
        raise ValueError(f"channels must be 1, 3 or 4, got {channels!r}.")
    suffixes = tuple(e.lower() for e in extensions)
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Image folder {root} does not exist; expected <root>/<class>/<image>."
        )
    class_dirs = sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not class_dirs:
        raise FileNotFoundError(
            f"Image folder {root} holds no class folder; expected <root>/<class>/<image>."
        )
    files = []
    for class_dir in class_dirs:
        images = sorted(
            p
            for p in class_dir.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.name.lower().endswith(suffixes)
        )
        if not images:
            raise FileNotFoundError(
                f"Class folder {class_dir} holds no image with an extension in {suffixes}."
            )
        files.append(images)
    paths = [str(p) for images in files for p in images]
    check_decoded_size(len(paths), (*size, channels), max_bytes, str(root))
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: _decode_and_resize(path, size, channels),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    try:
        all_images = np.concatenate(list(dataset.batch(256).as_numpy_iterator()))
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"Cannot decode {_first_undecodable(paths)}: {first_line(error)}"
        ) from error
    counts = np.array([len(images) for images in files], np.int64)
    logging.info(
        "Loaded %d images of %d classes from %s.", len(paths), len(files), root
    )
    return ClassImages(
        images=all_images,
        class_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        class_names=tuple(d.name for d in class_dirs),
    )


def _first_undecodable(paths: list[str]) -> str:
    """Finds the file that failed to decode (only called on that error path)."""
    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except tf.errors.InvalidArgumentError:
            return path
    return f"an image under {pathlib.Path(paths[0]).parent.parent}"
