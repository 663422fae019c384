"""Hostile embedding files: each is refused with a one-line ValueError naming the
file, within bounded memory.

Files that crashed or exhausted the old loader are loaded in a fresh interpreter
(``load_in_child``), so a regression fails one test instead of the test process
or the machine; it reports its peak RSS, which must stay under PEAK_RSS_MB.
"""

import io
import json
import os
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

from tfmeta.data.embeddings import load_embedding_file

REPO = pathlib.Path(__file__).resolve().parents[2]
PEAK_RSS_MB = 256  # the child's whole peak: Python, numpy and the loader (~30 MB)

# The loader alone (tfmeta.data's __init__ would import TensorFlow, ~600 MB), under
# a 4 GB address-space limit so that a regression fails here, not the machine. Its
# peak RSS is its own (tests.memory: VmHWM, the high-water mark since exec; never
# ru_maxrss, which also counts the parent's RSS at fork, 600 MB of TensorFlow
# under pytest), None where /proc is missing.
_CHILD = """
import json, resource, sys, types
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import tfmeta
from tests.memory import peak_resident_mib
package = types.ModuleType("tfmeta.data")
package.__path__ = [tfmeta.__path__[0] + "/data"]
sys.modules["tfmeta.data"] = package
from tfmeta.data.embeddings import load_embedding_file
try:
    load_embedding_file(sys.argv[1])
    outcome = "loaded"
except ValueError as error:
    outcome = "ValueError: " + str(error)
print(json.dumps({"outcome": outcome, "peak_mb": peak_resident_mib()}))
"""


def load_in_child(path: pathlib.Path) -> dict:
    """{"outcome": "loaded" or "ValueError: ...", "peak_mb": peak RSS} of loading
    ``path`` in a fresh interpreter, which must exit normally."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, (
        f"loading {path.name} ended the child with {done.returncode}: {done.stderr[-2000:]}"
    )
    return json.loads(done.stdout.splitlines()[-1])


class Call:
    """Pickles as ``function(*args)``, then BUILD ``state`` if given: the way a
    hostile file reaches numpy's constructors with arguments of its choosing."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) + (
            () if self.state is None else (self.state,)
        )


RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, as pickles name it


def array_state(shape, dtype, data):
    """An array as numpy pickles one, with any shape, dtype and data."""
    return Call(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def fields(n=4, d=3):
    keys = np.array([f"{i}-c{i % 2}-img{i}" for i in range(n)])
    embeddings = np.arange(n * d, dtype=np.float32).reshape(n, d) + 1
    return {"keys": keys, "embeddings": embeddings, "labels": np.arange(n) % 2}


def npy_header(shape, descr="<f4"):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return header.getvalue()


def write_npz(path, members):
    """An .npz whose members are {name: raw .npy bytes}, deflated."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


# ---- files that crashed the old loader or took gigabytes: built, then loaded in a child


def overlapping_fields_dtype(path):
    # A void dtype whose object field lies over an int field: numpy's own
    # dtype.__setstate__ accepts it, and the int 0x41414141 becomes a pointer.
    fields_state = {"pointer": (np.dtype("O"), 0), "number": (np.dtype("i8"), 0)}
    state = (3, "|", None, ("pointer", "number"), fields_state, 16, 8, 1)
    dtype = Call(np.dtype, ("V16", False, True), state)
    embeddings = array_state((1,), dtype, struct.pack("<qq", 0x41414141, 0))
    path.write_bytes(pickle.dumps({**fields(1), "embeddings": embeddings}))


def fields_in_a_plain_dtype_state(path):
    state = (3, "<", None, ("a", "b"), {"a": (np.dtype("O"), 0)}, -1, -1, 1)
    dtype = Call(np.dtype, ("f8", False, True), state)
    embeddings = array_state((1, 1), dtype, struct.pack("<d", 1.0))
    path.write_bytes(pickle.dumps({**fields(1), "embeddings": embeddings}))


def negative_offset_ndarray(path):
    # numpy.ndarray(shape, dtype, buffer, offset): 64 KiB before its buffer.
    args = ((4, 1), np.dtype("f8"), bytes(32), -(1 << 16))
    path.write_bytes(
        pickle.dumps({**fields(4, 1), "embeddings": Call(np.ndarray, args)})
    )


def size_claim_object_array(path):
    # 800 bytes that ask numpy for a (10, 5e7) object array: 4 GB of pointers.
    embeddings = array_state((10, 50_000_000), np.dtype("O"), [0.0] * 4)
    path.write_bytes(pickle.dumps({**fields(10), "embeddings": embeddings}))


def size_claim_float_array(path):
    embeddings = array_state((10, 50_000_000), np.dtype("f8"), bytes(64))
    path.write_bytes(pickle.dumps({**fields(10), "embeddings": embeddings}))


def forged_byte_length(path):
    # BINBYTES8 announcing 1 TiB in a 30-byte file.
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + bytes(16) + b".")


def billion_laughs(container):
    def build(path):
        # 10**9 keys through 9 levels of one list referenced 10 times (1.4 KB).
        level = container(["0-a-b"] * 10)
        for _ in range(8):
            level = container([level] * 10)
        path.write_bytes(pickle.dumps({**fields(1), "keys": level}))

    return build


def shared_wide_key(path):
    # One 1 MB string referenced by 2000 keys: an 8 GB array of fixed-width keys.
    key = "0-a-" + "x" * 1_000_000
    raw = {**fields(2000, 1), "keys": [key] * 2000}
    path.write_bytes(pickle.dumps(raw))


def million_empty_dicts(path):
    # 64 bytes of Python objects per byte of file.
    path.write_bytes(b"\x80\x04" + b"}" * 2_000_000 + b".")


def deflate_bomb(path):
    # 1 GiB of float32 zeros in a 1 MB .npz, as in the issue: one deflated MiB of
    # zeros, fully flushed so that it refers to nothing before it, repeated 1024
    # times after the deflated .npy header, then an empty final block.
    header = npy_header((1 << 18, 1 << 10))
    mebibyte = bytes(1 << 20)
    deflate = [zlib.compressobj(9, zlib.DEFLATED, -15) for _ in range(2)]
    stream = deflate[0].compress(header) + deflate[0].flush(zlib.Z_FULL_FLUSH)
    block = deflate[1].compress(mebibyte) + deflate[1].flush(zlib.Z_FULL_FLUSH)
    stream += block * 1024 + b"\x03\x00"
    crc = zlib.crc32(header)
    for _ in range(1024):
        crc = zlib.crc32(mebibyte, crc)
    name, size = b"embeddings.npy", len(header) + (1024 << 20)
    sizes = (crc, len(stream), size, len(name))
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, *sizes, 0) + name
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, *sizes, *[0] * 6
    )
    central += name
    offset = len(local) + len(stream)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), offset, 0)
    path.write_bytes(local + stream + central + end)


def declared_size_without_data(path):
    write_npz(path, {"embeddings": npy_header((1_000_000, 1_000_000))})


def declared_string_width(path):
    write_npz(path, {"keys": npy_header((10,), "<U100000000")})


CHILD_CASES = {  # name: (build, suffix, what the one-line ValueError says)
    "overlapping_fields_dtype": (overlapping_fields_dtype, ".pkl", "numpy dtype 'V16'"),
    "fields_in_a_plain_dtype_state": (
        fields_in_a_plain_dtype_state,
        ".pkl",
        "structured dtypes .* are refused",
    ),
    "negative_offset_ndarray": (
        negative_offset_ndarray,
        ".pkl",
        "refusing to call numpy.ndarray",
    ),
    "size_claim_object_array": (
        size_claim_object_array,
        ".pkl",
        r"object array of shape \(10, 50000000\) without its items",
    ),
    "size_claim_float_array": (
        size_claim_float_array,
        ".pkl",
        "needs 4000000000 bytes of data but the file gives 64",
    ),
    "forged_byte_length": (
        forged_byte_length,
        ".pkl",
        "a length of 1099511627776 bytes where 17 remain",
    ),
    "billion_laughs_lists": (
        billion_laughs(list),
        ".pkl",
        "a list referenced a second time",
    ),
    "billion_laughs_tuples": (
        billion_laughs(tuple),
        ".pkl",
        "a tuple referenced a second time",
    ),
    "shared_wide_key": (
        shared_wide_key,
        ".pkl",
        "refusing 2000 keys of up to 1000004 characters",
    ),
    "million_empty_dicts": (million_empty_dicts, ".pkl", "refusing pickle objects"),
    "deflate_bomb": (
        deflate_bomb,
        ".npz",
        r"refusing member 'embeddings.npy' of shape \(262144, 1024\)",
    ),
    "declared_size_without_data": (
        declared_size_without_data,
        ".npz",
        r"\(4000000000000 bytes\): loading would allocate more than",
    ),
    "declared_string_width": (
        declared_string_width,
        ".npz",
        r"dtype <U100000000 \(4000000000 bytes\)",
    ),
}


@pytest.mark.parametrize("case", sorted(CHILD_CASES))
def test_hostile_file_is_refused_in_bounded_memory(tmp_path, case):
    build, suffix, message = CHILD_CASES[case]
    path = tmp_path / (case + suffix)
    build(path)
    result = load_in_child(path)
    assert result["outcome"].startswith(f"ValueError: {path}: "), result
    assert "\n" not in result["outcome"] and re.search(message, result["outcome"])
    if result["peak_mb"] is None:
        pytest.skip("no VmHWM in /proc/self/status: the peak memory is not measured")
    assert result["peak_mb"] < PEAK_RSS_MB, result


# ---- files refused in this process


def test_a_pickle_calling_os_system_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "system.pkl"
    payload = Call(os.system, (f"touch {marker}",))
    path.write_bytes(pickle.dumps({**fields(), "extra": payload}))
    with pytest.raises(
        ValueError, match=r"refusing to load global '\w+\.system'"
    ) as info:
        load_embedding_file(path)
    assert isinstance(info.value, pickle.UnpicklingError) and not marker.exists()


def with_embedding(row, column, value, dtype):
    embeddings = fields()["embeddings"].astype(dtype)
    embeddings[row, column] = value
    return {**fields(), "embeddings": embeddings}


def self_referencing_list():
    keys = []
    keys.append(keys)
    return {**fields(1), "keys": keys}


REFUSED = {  # name: (file contents, suffix, what the one-line ValueError says)
    "nan": (
        with_embedding(1, 2, np.nan, np.float32),
        ".pkl",
        r"holds NaN or infinite values as float32, first at row 1, column 2 \(nan ",
    ),
    "float64_beyond_float32": (
        with_embedding(2, 0, 1e39, np.float64),
        ".pkl",
        r"as float32, first at row 2, column 0 \(1e\+39 as float64\)",
    ),
    "float64_beyond_float32_npz": (
        {"embeddings": npy(with_embedding(0, 1, -1e39, np.float64)["embeddings"])}
        | {name: npy(fields()[name]) for name in ("keys", "labels")},
        ".npz",
        r"first at row 0, column 1 \(-1e\+39 as float64\)",
    ),
    "object_array_of_embeddings": (
        {**fields(), "embeddings": fields()["embeddings"].astype(object)},
        ".pkl",
        r"object array holding a float: object arrays may hold only strings",
    ),
    "complex_embeddings": (
        {**fields(), "embeddings": fields()["embeddings"].astype(np.complex64)},
        ".pkl",
        "numpy dtype 'c8'",
    ),
    "bool_labels": (
        {**fields(), "labels": np.ones(4, bool)},
        ".pkl",
        "numpy dtype 'b1'",
    ),
    "integer_keys": (
        {**fields(), "keys": np.arange(4)},
        ".pkl",
        "'keys' must be strings",
    ),
    "nested_keys": (
        {**fields(), "keys": [[key] for key in fields()["keys"]]},
        ".pkl",
        "'keys' must be strings, got a list",
    ),
    "self_referencing_list": (
        self_referencing_list(),
        ".pkl",
        "a list referenced a second time",
    ),
    "truncated_pickle": (
        pickle.dumps(fields())[:-40],
        ".pkl",
        "where .* remain|without STOP",
    ),
    "structured_npz_member": (
        {"embeddings": npy(np.zeros(4, [("a", "<f4"), ("b", "<i4")]))},
        ".npz",
        "member 'embeddings.npy' is a structured dtype",
    ),
    "object_npz_member": (
        {"keys": npy(fields()["keys"].astype(object))},
        ".npz",
        "an object array, which only pickle reads",
    ),
    "npz_member_longer_than_its_header": (
        {"keys": npy_header((2, 2)) + bytes(1 << 20)},
        ".npz",
        "member 'keys.npy' holds more data than its header declares",
    ),
    "npz_member_shorter_than_its_header": (
        {"keys": npy_header((4, 3)) + bytes(10)},
        ".npz",
        "member 'keys.npy' ends after 10 of the 48 bytes",
    ),
    "npz_member_without_npy_header": (
        {"keys": b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 100},
        ".npz",
        "member 'keys.npy' has no readable .npy header",
    ),
    "npz_that_is_not_a_zip": (b"PK not really", ".npz", "not a readable .npz archive"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_file_is_refused_with_one_line(tmp_path, case):
    contents, suffix, message = REFUSED[case]
    path = tmp_path / (case + suffix)
    if isinstance(contents, bytes):
        path.write_bytes(contents)
    elif suffix == ".npz":
        write_npz(path, contents)
    else:
        path.write_bytes(pickle.dumps(contents, protocol=2))
    with pytest.raises(ValueError) as info:
        load_embedding_file(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


# ---- what numpy writes still loads


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_numpy_writes_load_in_every_protocol(tmp_path, protocol):
    raw = fields()
    keys = raw["keys"]
    for stored_keys, labels in [
        (keys, raw["labels"]),
        (np.char.encode(keys, "latin1"), raw["labels"].astype(">i4")),
        (keys.astype(object), list(raw["labels"])),  # numpy int scalars
        ([str(key) for key in keys], [int(label) for label in raw["labels"]]),
        (list(keys), raw["labels"].astype(np.float32)),  # numpy str scalars
    ]:
        path = tmp_path / "train_embeddings.pkl"
        stored = {**raw, "keys": stored_keys, "labels": labels}
        stored["embeddings"] = np.asfortranarray(raw["embeddings"].astype(">f8"))
        path.write_bytes(pickle.dumps(stored, protocol=protocol))
        loaded = load_embedding_file(path)
        assert list(loaded["keys"]) == list(keys)
        np.testing.assert_array_equal(loaded["embeddings"], raw["embeddings"])
        np.testing.assert_array_equal(loaded["labels"], raw["labels"])


def test_npz_layouts_numpy_writes_load(tmp_path):
    raw = fields()
    for save, embeddings, keys in [
        (np.savez, raw["embeddings"], raw["keys"]),
        (np.savez_compressed, raw["embeddings"].astype(">f8"), raw["keys"]),
        (np.savez, np.asfortranarray(raw["embeddings"]), np.char.encode(raw["keys"])),
        (np.savez_compressed, raw["embeddings"].astype(np.int8), raw["keys"]),
    ]:
        path = tmp_path / "val_embeddings.npz"
        save(path, keys=keys, embeddings=embeddings, labels=raw["labels"])
        loaded = load_embedding_file(path)
        assert list(loaded["keys"]) == list(raw["keys"])
        assert loaded["embeddings"].dtype == np.float32
        np.testing.assert_array_equal(loaded["embeddings"], raw["embeddings"])
        np.testing.assert_array_equal(loaded["labels"], raw["labels"])
