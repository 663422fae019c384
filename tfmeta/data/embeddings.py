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

Safety: an embedding file may be hostile. ``.pkl`` files are read by
``safe_pickle.RestrictedUnpickler``, which runs the pickle opcodes itself and
builds only dicts, lists, strings, numbers and plain numpy arrays from checked
dtype, shape and data length (no code from the file runs, no dtype fields,
offsets or strides from the file are used). ``.npz`` members are read from their
``.npy`` header first: only plain float/int or string arrays, whose declared size
is charged to the memory cap before exactly that many bytes are decompressed.
Loading a file of F bytes allocates at most ``safe_pickle.MAX_EXPANSION`` (16)
x F + 1 MiB besides the file's own bytes (``safe_pickle.MemoryBudget``). Such
files, fields of other types, and embeddings that are not finite as float32 are
refused with a one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from tfmeta.data.class_images import ClassImages
from tfmeta.data.safe_pickle import (
    MemoryBudget,
    RefusedFileError,
    RestrictedUnpickler,
    array_dtype_problem,
    one_line,
)

SPLITS = ("train", "val", "test")
FIELDS = ("keys", "embeddings", "labels")
EXTENSIONS = (".pkl", ".npz")
INFO_FILE = "embedding_info.json"  # beside the files; experiments.embed writes it


def load_embedding_file(path: str) -> dict[str, np.ndarray]:
    """The fields "keys" ``[n]`` str, "embeddings" ``[n, d]`` float32, "labels" ``[n]``
    of one ``.pkl`` (restricted unpickling) or ``.npz`` file, checked.

    Raises ``ValueError`` (one line naming the file) for a file that is not a
    plain embedding file (a list or any other object instead of a dict
    included) or that would take more memory than its cap.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedding file {path} does not exist")
    budget = MemoryBudget(os.path.getsize(path), path)
    if path.endswith(".npz"):
        raw = _read_npz(path, budget)
    elif path.endswith(".pkl"):
        with open(path, "rb") as f:
            raw = RestrictedUnpickler(f, source=path, budget=budget).load()
    else:
        raise ValueError(f"{path}: expected a .pkl or .npz embedding file")
    return _check_fields(raw, path, budget)


_CHUNK_BYTES = 1 << 20  # .npz data is decompressed this much at a time


def _read_npz(path: str, budget: MemoryBudget) -> dict[str, np.ndarray]:
    """The FIELDS members of an ``.npz``, each ``.npy`` header checked (dtype, shape,
    size charged to ``budget``) before its data is decompressed."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {
                info.filename[: -len(".npy")]: info
                for info in archive.infolist()
                if info.filename.endswith(".npy")
            }
            return {
                field: _read_npy_member(archive, members[field], path, budget)
                for field in FIELDS
                if field in members
            }
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as error:
        raise RefusedFileError(
            f"{path}: not a readable .npz archive ({one_line(error)})"
        ) from None
    except RuntimeError as error:  # an encrypted member needs a password
        raise RefusedFileError(f"{path}: {one_line(error)}") from None


def _read_npy_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, budget: MemoryBudget
) -> np.ndarray:
    name = info.filename
    with archive.open(info) as member:
        try:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"format version {version} (structured arrays only)")
            read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
            shape, fortran_order, dtype = read_header(member)
        except (ValueError, EOFError) as error:
            raise RefusedFileError(
                f"{path}: member {name!r} has no readable .npy header ({one_line(error)})"
            ) from None
        problem = array_dtype_problem(dtype, allow_object=False)
        if problem:
            raise RefusedFileError(f"{path}: member {name!r} is {problem}")
        if len(shape) > 32 or any(n < 0 for n in shape):
            raise RefusedFileError(f"{path}: member {name!r} has shape {shape}")
        nbytes = math.prod(shape) * dtype.itemsize
        budget.spend(nbytes, f"member {name!r} of shape {shape} and dtype {dtype}")
        data = np.empty(nbytes, np.uint8)
        filled = 0
        while filled < nbytes:  # never more than the header declares
            chunk = member.read(min(_CHUNK_BYTES, nbytes - filled))
            if not chunk:
                raise RefusedFileError(
                    f"{path}: member {name!r} ends after {filled} of the {nbytes} "
                    "bytes its header declares"
                )
            data[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
            filled += len(chunk)
        if member.read(1):
            raise RefusedFileError(
                f"{path}: member {name!r} holds more data than its header declares "
                f"({nbytes} bytes for shape {shape} and dtype {dtype})"
            )
    array = data.view(dtype)
    return array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)


def _check_fields(
    raw: object, path: str, budget: MemoryBudget | None = None
) -> dict[str, np.ndarray]:
    """The three fields as fresh arrays: keys ``[n]`` str, embeddings ``[n, d]``
    float32 (finite as float32), labels ``[n]``; each allocation charged to
    ``budget`` (None: trusted input, as when writing)."""
    if not isinstance(raw, dict):  # a file's content: a bad value, not a caller's type
        raise ValueError(  # noqa: TRY004
            f"{path}: expected a dict with {list(FIELDS)}, got {type(raw).__name__}"
        )
    missing = [field for field in FIELDS if field not in raw]
    if missing:
        got = sorted(one_line(key, 40) for key in raw)
        raise ValueError(
            f"{path}: missing fields {missing}; expected {list(FIELDS)}, got {got}"
        )
    embeddings = raw["embeddings"]
    if (
        not isinstance(embeddings, np.ndarray)
        or embeddings.ndim != 2
        or embeddings.dtype.kind not in "fiu"
        or array_dtype_problem(embeddings.dtype, allow_object=False)
    ):
        raise ValueError(
            f"{path}: 'embeddings' must be a numeric [n, d] array, got {_describe(embeddings)}"
        )
    keys, labels = raw["keys"], raw["labels"]
    counts = [_count(keys, "keys", path), _count(labels, "labels", path)]
    if not counts[0] == counts[1] == len(embeddings):
        raise ValueError(
            f"{path}: {counts[0]} keys, {counts[1]} labels and {len(embeddings)} "
            "embeddings; expected one key and one label per embedding"
        )
    keys = _keys_array(keys, path, budget)
    labels = _labels_array(labels, path, budget)
    _spend(budget, 4 * embeddings.size, "the float32 embeddings")
    with np.errstate(over="ignore", invalid="ignore"):
        vectors = embeddings.astype(np.float32)
    rows = max(1, _CHUNK_BYTES // max(4 * vectors.shape[1], 1))
    for start in range(0, len(vectors), rows):  # about 1 MiB of vectors at a time
        finite = np.isfinite(vectors[start : start + rows])
        if not finite.all():
            row, column = divmod(int(np.argmin(finite.reshape(-1))), vectors.shape[1])
            value = float(embeddings[start + row, column])
            raise ValueError(
                f"{path}: 'embeddings' holds NaN or infinite values as float32, first "
                f"at row {start + row}, column {column} ({value!r} as {embeddings.dtype})"
            )
    return {"keys": keys, "embeddings": vectors, "labels": labels}


def _spend(budget: MemoryBudget | None, nbytes: int, what: str) -> None:
    if budget is not None:
        budget.spend(nbytes, what)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} and dtype {one_line(value.dtype, 80)}"
    return f"a {type(value).__name__}"


def _count(value: object, field: str, path: str) -> int:
    if isinstance(value, np.ndarray):
        return value.size
    if type(value) in (list, tuple):
        return len(value)
    raise ValueError(
        f"{path}: {field!r} must be an array or a list, got {_describe(value)}"
    )


def _keys_array(value: object, path: str, budget: MemoryBudget | None) -> np.ndarray:
    """``[n]`` str from a str/bytes array, an object array or a list of str/bytes;
    the width is checked against ``budget`` before anything is decoded."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "US":
        flat = value.reshape(-1)
        if value.dtype.kind == "S":
            _spend(budget, 4 * value.nbytes, "the keys")
            return np.char.decode(flat, "latin1")
        _spend(budget, value.nbytes, "the keys")
        return flat.astype(np.str_)
    if isinstance(value, np.ndarray) and value.dtype.kind != "O":
        raise ValueError(f"{path}: 'keys' must be strings, got {_describe(value)}")
    items = value.reshape(-1).tolist() if isinstance(value, np.ndarray) else value
    wrong = next((type(k) for k in items if not isinstance(k, (str, bytes))), None)
    if wrong is not None:
        raise ValueError(f"{path}: 'keys' must be strings, got a {wrong.__name__}")
    width = max(map(len, items), default=0)
    _spend(
        budget,
        4 * len(items) * max(width, 1),
        f"{len(items)} keys of up to {width} characters",
    )
    keys = np.empty(len(items), f"<U{max(width, 1)}")
    for index, item in enumerate(items):
        keys[index] = item.decode("latin1") if isinstance(item, bytes) else item
    return keys


def _labels_array(value: object, path: str, budget: MemoryBudget | None) -> np.ndarray:
    """``[n]`` float or int labels from an array or a list of numbers."""
    if type(value) in (list, tuple):
        numbers = (int, float, np.integer, np.floating)
        wrong = next((type(x) for x in value if not isinstance(x, numbers)), None)
        if wrong is not None:
            raise ValueError(
                f"{path}: 'labels' must be numbers, got a {wrong.__name__}"
            )
        _spend(budget, 8 * len(value), "the labels")
        value = np.array(value)
    else:
        _spend(budget, value.nbytes, "the labels")
    if value.dtype.kind not in "fiu" or array_dtype_problem(
        value.dtype, allow_object=False
    ):
        raise ValueError(
            f"{path}: 'labels' must be float or int, got {_describe(value)}"
        )
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise ValueError(f"{path}: 'labels' holds NaN or infinite values")
    return value.reshape(-1).copy()


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


def name_embedding_classes(
    root: str, dataset: str, crop: str, splits: dict[str, ClassImages]
) -> dict[str, ClassImages]:
    """``splits`` with each class named as in the data it was embedded from
    (Omniglot's ``"Alphabet/characterNN"``, rotations ``.../rot90``), for tasks
    within one alphabet on embeddings: the names are read from the
    ``embedding_info.json`` that ``experiments.embed`` writes beside the files
    (its ``classes``: split -> class token -> name). FileNotFoundError or
    ValueError (one line) when the file or a class's name is missing."""
    path = os.path.join(os.path.expanduser(root), dataset, crop, INFO_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"tasks_within_alphabet on embeddings needs {path} (written by "
            "experiments.embed), naming each class's alphabet"
        )
    with open(path) as file:
        names = json.load(file).get("classes", {})
    named = {}
    for split, classes in splits.items():
        known = names.get(split, {})
        missing = [token for token in classes.class_names if token not in known]
        if missing:
            raise ValueError(
                f"{path} names no class {missing[0]!r} of split {split!r}: "
                "were the embeddings written by another run?"
            )
        named[split] = ClassImages(
            classes.images,
            classes.class_offsets,
            tuple(known[token] for token in classes.class_names),
        )
    return named
