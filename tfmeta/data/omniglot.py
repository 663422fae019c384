"""Omniglot (Lake et al., 2015): loaders, preprocessing and meta-learning splits.

Two loaders give identical records for the same images:

* `load_omniglot_folder` reads the original archives (`images_background.zip`,
  `images_evaluation.zip` and the two "minimal" background sets), zipped or
  unpacked, without network access.
* `load_omniglot_tfds` (``omniglot_tfds``) reads the tensorflow-datasets `omniglot` builder.

Both decode every image once, preprocess it with `preprocess_omniglot_image`
and return one `OmniglotCharacter` per character, sorted by
`(alphabet, character)`; `tfmeta.data.omniglot_split` turns them into
train/val/test class sets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf
from absl import logging

from tfmeta.data.class_images import check_decoded_size
from tfmeta.errors import first_line

ARCHIVES = (
    "images_background",
    "images_evaluation",
    "images_background_small1",
    "images_background_small2",
)
"""The Omniglot archives a folder may hold (``<name>.zip`` or the unpacked
``<name>/`` folder), in priority order: a character in two archives counts once."""
# Source name of each archive, in the same (priority) order as ARCHIVES.
SOURCES = ("background", "evaluation", "small1", "small2")
_ARCHIVE_SOURCE = dict(zip(ARCHIVES, SOURCES))
# tensorflow-datasets split -> source, in priority order.
_CHARACTER_DIR = re.compile(r"character\d+")
_OFFLINE_HINT = (
    "To use Omniglot offline, download the original zips (images_background.zip, "
    "images_evaluation.zip, ...) from https://github.com/brendenlake/omniglot into a "
    "folder and pass it as the data_dir setting or set TFMETA_OMNIGLOT_DIR "
    "(read by tfmeta.data.load_omniglot_folder)."
)


@dataclasses.dataclass(frozen=True, eq=False)
class OmniglotCharacter:
    """All drawings of one Omniglot character.

    Attributes:
      alphabet: alphabet folder name, e.g. `"Greek"`, `"Japanese_(katakana)"`.
      character: character folder name, e.g. `"character01"`.
      source: where the first copy was found: `"background"`, `"evaluation"`,
        `"small1"` or `"small2"`.
      images: float32 `[n, image_size, image_size, 1]` from
        `preprocess_omniglot_image` (strokes 1.0, paper 0.0), ordered by pixel
        content (see `load_omniglot_folder`).

    Two records are equal when all fields, pixels included, are equal.
    """

    alphabet: str
    character: str
    source: str
    images: np.ndarray

    @property
    def name(self) -> str:
        """Class name used by `split_omniglot`, e.g. `"Greek/character01"`."""
        return f"{self.alphabet}/{self.character}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OmniglotCharacter):
            return NotImplemented
        return (
            (self.alphabet, self.character, self.source)
            == (other.alphabet, other.character, other.source)
            and self.images.shape == other.images.shape
            and bool(np.array_equal(self.images, other.images))
        )

    __hash__ = None  # Mutable-array payload: not hashable.


def preprocess_omniglot_image(
    image: tf.Tensor | np.ndarray | bytes, image_size: int = 28
) -> tf.Tensor:
    """Turns a raw Omniglot image into the network input, with TF ops only.

    Steps: decode (if PNG bytes), grayscale (mean of the first three channels,
    exact for Omniglot's gray images stored as RGB by tensorflow-datasets),
    scale to [0, 1], invert so that strokes are 1.0 and the paper 0.0 (as the
    MAML code, `1.0 - image / 255`), then resize to `image_size` x
    `image_size` with `tf.image.resize(method="area")`, i.e. each output pixel
    is the average of the input pixels it covers (105 -> 28 averages about
    3.75 x 3.75 pixels, which keeps thin strokes visible), and clip to [0, 1].
    Inverting before resizing keeps the paper exactly 0.0.

    Usable eagerly or inside a `tf.function` (the rank must be static).

    Args:
      image: PNG bytes (a scalar string tensor), or pixels `[H, W]`,
        `[H, W, C]` or a batch `[batch, H, W, C]` with `C` in {1, 3, 4}: an
        integer dtype (0 black ink ... dtype max white paper, e.g. uint8) or a
        float dtype in [0, 1] with the same convention.
      image_size: side of the square output, >= 1.

    Returns:
      float32 `[image_size, image_size, 1]`, or `[batch, image_size,
      image_size, 1]` for a batch, values in [0, 1], strokes 1.0.
    """
    is_int = isinstance(image_size, (int, np.integer)) and not isinstance(
        image_size, bool
    )
    if not is_int or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
    image_size = int(image_size)
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.string:
        if image.shape.rank != 0:
            raise ValueError(
                f"Expected one PNG (a scalar string), got shape {image.shape}."
            )
        image = tf.io.decode_png(image, channels=1)
    if image.shape.rank == 2:
        image = image[..., tf.newaxis]
    if image.shape.rank not in (3, 4):
        raise ValueError(
            f"Expected an image [H, W], [H, W, C] or [batch, H, W, C], got shape {image.shape}."
        )
    if image.dtype.is_integer:
        scale = float(image.dtype.max)
    elif image.dtype.is_floating:
        scale = 1.0
    else:
        raise TypeError(
            f"Expected integer or float pixels, got dtype {image.dtype.name}."
        )
    # Mean before scaling: (a + a + a) / 3 == a exactly for replicated gray channels.
    gray = tf.reduce_mean(tf.cast(image[..., :3], tf.float32), axis=-1, keepdims=True)
    ink = 1.0 - gray / scale
    ink = tf.image.resize(ink, [image_size, image_size], method="area")
    return tf.clip_by_value(ink, 0.0, 1.0)


def _preprocess_all(dataset: tf.data.Dataset, image_size: int) -> Iterable:
    """Maps `preprocess_omniglot_image` over `(image, *extras)` elements in a graph."""

    def preprocess(image, *extras):
        return (preprocess_omniglot_image(image, image_size), *extras)

    dataset = dataset.map(
        preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.batch(512).as_numpy_iterator()


def _sorted_by_content(images: np.ndarray) -> np.ndarray:
    """Orders the images of a character by their bytes, a loader-independent order."""
    keys = [image.tobytes() for image in images]
    return images[sorted(range(len(images)), key=keys.__getitem__)]


def _archive_files(data_dir: pathlib.Path, archive: str, stack: contextlib.ExitStack):
    """Lists one archive's PNGs as {(alphabet, character): {file name: reader}}.

    Returns None when the archive is absent. The zip is preferred over an
    unpacked folder of the same name; an unpacked folder may hold the zip's
    root folder or the alphabets directly.
    """
    zip_path, folder = data_dir / f"{archive}.zip", data_dir / archive
    if zip_path.is_file():
        try:
            archive_zip = stack.enter_context(zipfile.ZipFile(zip_path))
        except zipfile.BadZipFile as error:
            raise ValueError(
                f"{zip_path} is not a readable zip archive ({error}): download it again"
            ) from None
        members = [m for m in archive_zip.namelist() if not m.endswith("/")]
        entries = [
            (zip_path / m, m.split("/"), _zip_reader(archive_zip, m)) for m in members
        ]
    elif folder.is_dir():
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        entries = [(p, list(p.relative_to(folder).parts), p.read_bytes) for p in files]
    else:
        return None
    characters = {}
    for path, parts, reader in entries:
        if (
            parts[-1].startswith(".")
            or parts[0] == "__MACOSX"
            or not parts[-1].endswith(".png")
        ):
            continue
        if len(parts) < 3 or not _CHARACTER_DIR.fullmatch(parts[-2]):
            raise ValueError(
                f"Unexpected Omniglot file {path}: expected <Alphabet>/characterNN/<file>.png "
                f"inside {archive}."
            )
        alphabet, character, file_name = parts[-3:]
        characters.setdefault((alphabet, character), {})[file_name] = reader
    if not characters:
        found = zip_path if zip_path.is_file() else folder
        raise FileNotFoundError(
            f"{found} holds no PNG at <Alphabet>/characterNN/<file>.png; is it an Omniglot archive?"
        )
    return characters


def _is_png(data: bytes) -> bool:
    try:
        tf.io.decode_png(data)
    except tf.errors.InvalidArgumentError:
        return False
    return True


def _zip_reader(archive_zip: zipfile.ZipFile, member: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return archive_zip.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise ValueError(
                f"cannot read {member} in {archive_zip.filename} ({error}): the "
                "archive is damaged; download it again"
            ) from None

    return read


def load_omniglot_folder(
    data_dir: str | pathlib.Path, image_size: int = 28, max_bytes: int | None = None
) -> list[OmniglotCharacter]:
    """Loads Omniglot from the original archives in `data_dir`, without network.

    `data_dir` holds any subset of `ARCHIVES`, each as `<name>.zip` (read in
    place, nothing extracted) or unpacked as `<name>/` (holding the zip's root
    folder `<name>/<Alphabet>/characterNN/*.png`, or the alphabets directly).
    A character found in several archives (Greek and Latin are in both minimal
    sets) counts once, from the first archive in `ARCHIVES` order; its files
    must then be the same. Images of a character are ordered by pixel content,
    so that this loader and `load_omniglot_tfds` give equal records.

    Args:
      data_dir: folder holding the archives.
      image_size: side of the preprocessed images (see `preprocess_omniglot_image`).
      max_bytes: refuse (ValueError) images that would need more memory
        decoded, before decoding them (None: no limit).

    Returns:
      One record per distinct character, sorted by `(alphabet, character)`,
      images float32 `[n, image_size, image_size, 1]`.

    Raises:
      FileNotFoundError: `data_dir` is missing or holds none of the archives.
      ValueError: a duplicated character differs between archives, a PNG is
        not at `<Alphabet>/characterNN/<file>.png`, an archive is damaged, or
        the images need more than `max_bytes`.
    """
    data_dir = pathlib.Path(data_dir)
    expected = ", ".join(f"{name}.zip" for name in ARCHIVES)
    if not data_dir.is_dir():
        what = "is a file" if data_dir.exists() else "does not exist"
        raise FileNotFoundError(
            f"Omniglot folder {data_dir} {what}; expected a folder holding any of "
            f"{expected} (or the same names unpacked as folders)."
        )
    selected = {}  # (alphabet, character) -> (source, {file name: reader})
    with contextlib.ExitStack() as stack:
        for archive in ARCHIVES:
            characters = _archive_files(data_dir, archive, stack)
            if characters is None:
                continue
            source, duplicates = _ARCHIVE_SOURCE[archive], 0
            for key, files in characters.items():
                if key in selected:
                    if set(files) != set(selected[key][1]):
                        raise ValueError(
                            f"Character {'/'.join(key)} is in {archive} and in the "
                            f"{selected[key][0]} archive with different files."
                        )
                    duplicates += 1
                    continue
                selected[key] = (source, files)
            logging.info(
                "Omniglot %s: %d characters, %d images (%d characters already loaded).",
                archive,
                len(characters) - duplicates,
                sum(len(f) for k, f in characters.items() if selected[k][0] == source),
                duplicates,
            )
        if not selected:
            raise FileNotFoundError(
                f"Omniglot folder {data_dir} holds none of {expected} (or the same names "
                "unpacked as folders)."
            )
        keys = sorted(selected)
        count = sum(len(selected[k][1]) for k in keys)
        check_decoded_size(count, (image_size, image_size, 1), max_bytes, str(data_dir))
        encoded = [selected[k][1][f]() for k in keys for f in sorted(selected[k][1])]
    batches = _preprocess_all(
        tf.data.Dataset.from_tensor_slices((encoded,)), image_size
    )
    try:
        images = np.concatenate([batch[0] for batch in batches])
    except tf.errors.InvalidArgumentError as error:
        files = [f"{k[0]}/{k[1]}/{f}" for k in keys for f in sorted(selected[k][1])]
        bad = next(
            (name for name, png in zip(files, encoded) if not _is_png(png)), "a file"
        )
        raise ValueError(
            f"Cannot decode {bad} under {data_dir} as PNG: {first_line(error)}"
        ) from error
    records, start = [], 0
    for alphabet, character in keys:
        source, files = selected[(alphabet, character)]
        block = images[start : start + len(files)]
        start += len(files)
        records.append(
            OmniglotCharacter(alphabet, character, source, _sorted_by_content(block))
        )
    _log_loaded(records, f"folder {data_dir}")
    return records


def _log_loaded(records: list[OmniglotCharacter], origin: str) -> None:
    counts = {s: sum(r.source == s for r in records) for s in SOURCES}
    logging.info(
        "Loaded %d Omniglot characters, %d images, from %s (by source: %s).",
        len(records),
        sum(len(r.images) for r in records),
        origin,
        ", ".join(f"{s} {n}" for s, n in counts.items() if n),
    )
