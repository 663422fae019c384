"""Embedding datasets in the format of the published LEO embeddings.

Layout (google-deepmind/leo ``data.py``): ``<root>/<dataset>/<crop>/<split>_embeddings.pkl``
for split in train, val, test; each file a dict with

  "keys":       ``[n]`` strings ``"<n>-<class>-<image>"`` (the class is the middle part),
  "embeddings": ``[n, d]`` floats (d = 640 for the published ones),
  "labels":     ``[n]`` the class labels.

A ``.npz`` with the same three arrays (``<split>_embeddings.npz``) is read the
same way. Embeddings are grouped by class (in order of first appearance) into a
``ClassImages`` whose "images" are the vectors ``[total, d]``, L2-normalized by
default as the reference code does, ready for ``episode_dataset``.

Safety: a pickle can run arbitrary code while it loads. ``load_embedding_file``
unpickles with an unpickler that resolves only the numpy globals needed to
rebuild arrays (and a latin-1 string encoder used by protocol-2 pickles) and
refuses any other global, naming it, before anything is called. ``.npz`` files
are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import _codecs
import os
import pickle
from collections.abc import Sequence

import numpy as np

from tfmeta.data.class_images import ClassImages

SPLITS = ("train", "val", "test")
FIELDS = ("keys", "embeddings", "labels")
EXTENSIONS = (".pkl", ".npz")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1").
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode with encoding {encoding!r}: only latin-1 "
            "(protocol-2 bytes) is allowed in an embedding file"
        )
    return _codecs.encode(text, "latin1")


def _numpy_global(module: str, name: str):
    # numpy >= 2 moved numpy.core to numpy._core; pickles may name either.
    try:
        core = __import__("numpy._core." + module, fromlist=[name])
    except ImportError:
        core = __import__("numpy.core." + module, fromlist=[name])
    return getattr(core, name)


def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = _numpy_global("multiarray", "_reconstruct")
    frombuffer = _numpy_global("numeric", "_frombuffer")
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer  # protocol 5
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only.

    ``find_class`` resolves the few numpy reconstruction globals; any other
    global (a function or class the pickle would call) raises
    ``pickle.UnpicklingError`` naming it, so no code from the file runs.
    """

    _ALLOWED = _allowed_globals()

    def find_class(self, module: str, name: str):
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(
                f"refusing to load global '{module}.{name}': an embedding file may hold "
                "only a dict of strings and numpy arrays (loading it would run code)"
            )
        return allowed


def load_embedding_file(path: str) -> dict[str, np.ndarray]:
    """The fields "keys" ``[n]`` str, "embeddings" ``[n, d]`` float32, "labels" ``[n]``
    of one ``.pkl`` (restricted unpickling) or ``.npz`` file, checked."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedding file {path} does not exist")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                raw = {key: archive[key] for key in archive.files}
        except ValueError as error:  # object arrays need pickle
            raise ValueError(
                f"{path}: cannot read without pickle ({error}); store keys as a string array"
            ) from error
    elif path.endswith(".pkl"):
        with open(path, "rb") as f:
            raw = RestrictedUnpickler(f, encoding="latin1").load()
    else:
        raise ValueError(f"{path}: expected a .pkl or .npz embedding file")
    return _check_fields(raw, path)


def _check_fields(raw: object, path: str) -> dict[str, np.ndarray]:
    if not isinstance(raw, dict):
        raise TypeError(
            f"{path}: expected a dict with {list(FIELDS)}, got {type(raw).__name__}"
        )
    missing = [field for field in FIELDS if field not in raw]
    if missing:
        raise ValueError(
            f"{path}: missing fields {missing}; expected {list(FIELDS)}, got {sorted(raw)}"
        )
    embeddings = np.asarray(raw["embeddings"])
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.number):
        raise ValueError(
            f"{path}: 'embeddings' must be a numeric [n, d] array, got shape "
            f"{embeddings.shape} and dtype {embeddings.dtype}"
        )
    keys = [
        k.decode("latin1") if isinstance(k, bytes) else str(k)
        for k in np.asarray(raw["keys"]).reshape(-1)
    ]
    labels = np.asarray(raw["labels"]).reshape(-1)
    if not len(keys) == len(labels) == len(embeddings):
        raise ValueError(
            f"{path}: {len(keys)} keys, {len(labels)} labels and {len(embeddings)} "
            "embeddings; expected one key and one label per embedding"
        )
    if not np.all(np.isfinite(embeddings)):
        raise ValueError(f"{path}: 'embeddings' holds NaN or infinite values")
    return {
        "keys": np.asarray(keys),
        "embeddings": embeddings.astype(np.float32),
        "labels": labels,
    }


def class_of_key(key: str) -> str:
    """The class of a key ``"<n>-<class>-<image>"``."""
    parts = key.split("-")
    if len(parts) != 3 or not parts[1]:
        raise ValueError(
            f"embedding key {key!r} is not of the form '<n>-<class>-<image>'"
        )
    return parts[1]


def embeddings_to_classes(
    fields: dict[str, np.ndarray], l2_normalize: bool = True
) -> ClassImages:
    """Groups embeddings by the class in their key (order of first appearance).

    Returns a ``ClassImages`` with images ``[n, d]`` float32; with
    ``l2_normalize`` each row is divided by max(||x||, 1e-6) (``tf.nn.l2_normalize``).
    """
    classes = [class_of_key(str(key)) for key in fields["keys"]]
    names = list(dict.fromkeys(classes))
    index = {name: i for i, name in enumerate(names)}
    class_index = np.array([index[c] for c in classes], np.int64)
    order = np.argsort(class_index, kind="stable")
    vectors = fields["embeddings"][order].astype(np.float32)
    if l2_normalize:
        norms = np.sqrt(np.maximum(np.sum(vectors**2, axis=1, keepdims=True), 1e-12))
        vectors = vectors / norms
    counts = np.bincount(class_index, minlength=len(names))
    return ClassImages(
        images=vectors,
        class_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        class_names=tuple(names),
    )


def embedding_path(root: str, dataset: str, crop: str, split: str) -> str:
    """``<root>/<dataset>/<crop>/<split>_embeddings.pkl``, or ``.npz`` if only that exists."""
    base = os.path.join(os.path.expanduser(root), dataset, crop, f"{split}_embeddings")
    for extension in EXTENSIONS:
        if os.path.isfile(base + extension):
            return base + extension
    raise FileNotFoundError(
        f"no embeddings for split {split!r}: expected {base}.pkl or {base}.npz "
        "(the LEO layout <root>/<dataset>/<crop>/<split>_embeddings.pkl; "
        "tfmeta-embed writes it for Omniglot)"
    )


def load_embedding_splits(
    root: str,
    dataset: str,
    crop: str = "center",
    splits: Sequence[str] = SPLITS,
    l2_normalize: bool = True,
) -> dict[str, ClassImages]:
    """{split: ClassImages ``[n, d]``} for the given splits; all must share d."""
    result = {
        split: embeddings_to_classes(
            load_embedding_file(embedding_path(root, dataset, crop, split)),
            l2_normalize,
        )
        for split in splits
    }
    dims = {split: classes.image_shape for split, classes in result.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"embedding dimensions differ between splits: {dims}")
    return result


def write_embedding_file(
    path: str, keys: Sequence[str], embeddings: np.ndarray, labels: np.ndarray
) -> None:
    """Writes the three fields to ``path`` (.pkl, pickle protocol 4, or .npz)."""
    fields = {
        "keys": np.asarray(list(keys), dtype=str),
        "embeddings": np.asarray(embeddings, np.float32),
        "labels": np.asarray(labels, np.int64),
    }
    if not path.endswith(EXTENSIONS):
        raise ValueError(f"{path}: expected a .pkl or .npz path")
    _check_fields(fields, path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        if path.endswith(".npz"):
            np.savez(f, **fields)
        else:
            pickle.dump(fields, f, protocol=4)
    os.replace(temporary, path)
