"""Omniglot through the tensorflow-datasets `omniglot` builder, with the same
records as ``tfmeta.data.omniglot.load_omniglot_folder`` for the same images;
offline, a quick probe of the download host fails at once with the hint."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import numpy as np
from absl import logging

from tfmeta.data.omniglot import (
    _OFFLINE_HINT,
    OmniglotCharacter,
    _log_loaded,
    _preprocess_all,
    _sorted_by_content,
)

_TFDS_SPLIT_SOURCE = {
    "train": "background",
    "test": "evaluation",
    "small1": "small1",
    "small2": "small2",
}

# Where tensorflow-datasets' omniglot builder downloads the archives from.
_DOWNLOAD_HOST = "github.com"
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _check_download_host(timeout: float = 10.0) -> None:
    """Fails within ``timeout`` seconds, with the offline hint, when the
    download host cannot be reached (the download itself retries for minutes
    first). Skipped behind a proxy, which a direct connection does not use."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    try:
        socket.create_connection((_DOWNLOAD_HOST, 443), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(
            f"cannot reach {_DOWNLOAD_HOST} to download Omniglot ({error}). "
            + _OFFLINE_HINT
        ) from error


def load_omniglot_tfds(
    data_dir: str | None = None,
    splits: Sequence[str] = ("train", "test", "small1", "small2"),
    image_size: int = 28,
    download: bool = True,
) -> list[OmniglotCharacter]:
    """Loads Omniglot through the tensorflow-datasets `omniglot` builder.

    Splits map to sources `train` -> "background", `test` -> "evaluation",
    `small1`/`small2` -> themselves. A character (alphabet, alphabet_char_id)
    in several splits counts once, from the first of background, evaluation,
    small1, small2. Records equal those of `load_omniglot_folder` for the same
    images (character `f"character{alphabet_char_id + 1:02d}"`, same
    preprocessing, images ordered by content).

    Args:
      data_dir: tensorflow-datasets data dir (None: its default).
      splits: any of "train", "test", "small1", "small2".
      image_size: side of the preprocessed images.
      download: download and prepare the data set when missing. With no
        route to the download host this fails at once (``ConnectionError``);
        other errors while downloading or reading propagate with a hint for
        offline use.

    Returns:
      One record per distinct character, sorted by `(alphabet, character)`.
    """
    import tensorflow_datasets as tfds  # Imported here: only this loader needs it.

    unknown = [s for s in splits if s not in _TFDS_SPLIT_SOURCE]
    if unknown or not splits:
        raise ValueError(
            f"splits must be a non-empty subset of {tuple(_TFDS_SPLIT_SOURCE)}, got {tuple(splits)}."
        )
    ordered = [s for s in _TFDS_SPLIT_SOURCE if s in splits]
    builder = tfds.builder("omniglot", data_dir=data_dir)
    if download and not builder.is_prepared():
        _check_download_host()
    try:
        if download:
            builder.download_and_prepare()
        datasets = {
            s: builder.as_dataset(split=s, shuffle_files=False) for s in ordered
        }
    except Exception as error:
        error.add_note(_OFFLINE_HINT)
        raise
    selected = {}  # (alphabet id, alphabet_char_id) -> (source, [images])
    for split in ordered:
        examples = datasets[split].map(
            lambda ex: (ex["image"], ex["alphabet"], ex["alphabet_char_id"])
        )
        found = {}
        for images, alphabets, char_ids in _preprocess_all(examples, image_size):
            for image, alphabet, char_id in zip(images, alphabets, char_ids):
                found.setdefault((int(alphabet), int(char_id)), []).append(image)
        new = {k: v for k, v in found.items() if k not in selected}
        selected.update({k: (_TFDS_SPLIT_SOURCE[split], v) for k, v in new.items()})
        logging.info(
            "Omniglot tfds split %s: %d characters, %d images (%d characters already loaded).",
            split,
            len(new),
            sum(len(v) for v in new.values()),
            len(found) - len(new),
        )
    # Alphabet names are known once the builder is prepared.
    alphabet_names = builder.info.features["alphabet"]
    records = [
        OmniglotCharacter(
            alphabet=alphabet_names.int2str(alphabet),
            character=f"character{char_id + 1:02d}",
            source=source,
            images=_sorted_by_content(np.stack(images)),
        )
        for (alphabet, char_id), (source, images) in selected.items()
    ]
    records.sort(key=lambda r: (r.alphabet, r.character))
    _log_loaded(records, "tensorflow-datasets")
    return records
