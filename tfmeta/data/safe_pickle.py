"""A restricted unpickler for embedding files, and the memory cap files load under.

A pickle is a program, and numpy's own reconstructors trust it: ``pickle.load``
calls any global the file names, ``numpy.dtype.__setstate__`` accepts fields that
overlap (an object field over an int field dereferences a pointer from the file),
``numpy.ndarray(shape, dtype, buffer, offset)`` reads memory before its buffer,
and memo references hand a walker the same list again and again. So
``RestrictedUnpickler`` runs the pickle opcodes itself (as PyTorch's
``weights_only`` unpickler does) and builds only:

- None, bools, ints, floats, str, bytes, tuples, lists and dicts, each tuple,
  list or dict referenced once (a second reference through the memo is refused);
- numpy arrays and scalars of float (2, 4, 8 bytes) or int (1, 2, 4, 8 bytes)
  items or fixed-width strings, and object arrays of str or bytes, through its own
  versions of the constructors numpy's pickles name: a dtype from a plain type
  code such as ``'f4'`` (a state with fields or a subarray is refused), a shape of
  non-negative ints, and data whose length is exactly shape x itemsize, checked
  before anything is allocated. No offset, stride or buffer comes from the file.

Each allocation a file asks for (64 bytes for every value pushed, string and
byte lengths, array data) is charged to a ``MemoryBudget`` of ``MAX_EXPANSION``
times the file's size plus ``SLACK_BYTES`` before it is made. Byte strings
longer than 4 KiB (array data) stay read-only views of the file's bytes.
"""

from __future__ import annotations

import codecs
import math
import pickle
import pickletools
import re
import struct
from collections.abc import Callable
from typing import BinaryIO, ClassVar

import numpy as np

# Loading a file may allocate at most MAX_EXPANSION x its size + SLACK_BYTES besides
# the file's own bytes. Embeddings are float arrays, stored about 1:1 in a pickle or
# .npz, and deflate shrinks real float features by well under 2x; 16x leaves room
# for compressed keys and labels and Python objects of lists, and refuses a deflate
# bomb (about 1000:1) or a pickle of a million empty dicts (64 bytes per byte).
# The slack lets tiny files (tests, toy data) load whatever their ratio.
MAX_EXPANSION = 16
SLACK_BYTES = 1 << 20

_OBJECT_BYTES = 64  # charged for every value pushed (a small object or a reference)
_VIEW_BYTES = 4096  # byte strings longer than this stay views of the file's bytes
_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1")


class RefusedFileError(ValueError):
    """A file refused before it could take unbounded memory or build unsafe arrays."""


class UnsafePickleError(RefusedFileError, pickle.UnpicklingError):
    """A pickle ``RestrictedUnpickler`` refuses (a ValueError and an UnpicklingError)."""


def one_line(text: object, limit: int = 300) -> str:
    """``text`` on one line of at most ``limit`` characters, for error messages."""
    try:
        flat = " ".join(str(text).split())
    except ValueError:  # an int too long to print
        flat = f"a {type(text).__name__}"
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class MemoryBudget:
    """The bytes loading one file may allocate: ``MAX_EXPANSION`` x its size + 1 MiB.

    ``spend`` is called before each allocation the file asks for; going over the
    limit raises ``RefusedFileError`` naming the file, what was asked and the cap.
    """

    def __init__(self, file_bytes: int, source: str):
        self.file_bytes = file_bytes
        self.source = source
        self.limit = MAX_EXPANSION * file_bytes + SLACK_BYTES
        self.spent = 0

    def spend(self, nbytes: int, what: str) -> None:
        self.spent += nbytes
        if self.spent > self.limit:
            total = "" if self.spent == nbytes else f", {self.spent} in all"
            raise RefusedFileError(
                f"{self.source}: refusing {what} ({nbytes} bytes{total}): loading would "
                f"allocate more than {self.limit} bytes, the cap for a "
                f"{self.file_bytes}-byte file ({MAX_EXPANSION} x its size + 1 MiB)"
            )


def array_dtype_problem(dtype: np.dtype, allow_object: bool) -> str | None:
    """Why an array of ``dtype`` may not come from an embedding file, or None.

    Allowed: float of 2, 4 or 8 bytes, int and uint of 1, 2, 4 or 8 bytes,
    fixed-width str or bytes, and with ``allow_object`` object arrays (whose items
    the reader checks are strings).
    """
    kind, size = dtype.kind, dtype.itemsize
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"a structured dtype {one_line(dtype, 80)}; only plain arrays are read"
    if (kind == "f" and size in (2, 4, 8)) or (kind in "iu" and size in (1, 2, 4, 8)):
        return None
    if (kind in "US" and size > 0) or (kind == "O" and allow_object):
        return None
    if kind == "O":
        return "an object array, which only pickle reads; store keys as a string array"
    return f"dtype {dtype}; only float, int and string arrays are read"


def _short(value: object) -> str:
    """A value from the file for an error message: short, and never failing."""
    if type(value) in (str, bytes):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    ints = (value,) if type(value) is int else value
    small = type(ints) is tuple and len(ints) <= 8
    if small and all(type(n) is int and abs(n) < 2**63 for n in ints):
        return repr(value)
    return f"a {type(value).__name__}"


class _Global:
    """A global the pickle named: a constructor below, or ndarray (never called)."""

    def __init__(self, name: str, call: Callable | None = None):
        self.name, self.call = name, call


class _PendingDtype:
    """``numpy.dtype(code)`` awaiting its state (byte order, string width)."""

    def __init__(self, dtype: np.dtype):
        self.dtype, self.built = dtype, False


class _PendingArray:
    """``_reconstruct(ndarray, (0,), b'b')`` awaiting its state."""

    array: np.ndarray | None = None


# Opcodes followed by a fixed-size argument, by the argument's struct format.
_ARGUMENT_CODES = {
    "<B": (
        *(pickle.PROTO, pickle.BININT1, pickle.LONG1, pickle.BINPUT, pickle.BINGET),
        *(pickle.SHORT_BINSTRING, pickle.SHORT_BINUNICODE, pickle.SHORT_BINBYTES),
    ),
    "<H": (pickle.BININT2,),
    "<i": (pickle.BININT, pickle.LONG4, pickle.BINSTRING),
    "<I": (pickle.BINUNICODE, pickle.BINBYTES, pickle.LONG_BINPUT, pickle.LONG_BINGET),
    "<Q": (pickle.FRAME, pickle.BINUNICODE8, pickle.BINBYTES8, pickle.BYTEARRAY8),
    ">d": (pickle.BINFLOAT,),
}
_ARGUMENT = {
    code: struct.Struct(fmt) for fmt, codes in _ARGUMENT_CODES.items() for code in codes
}
_DISPATCH: dict[int, tuple[struct.Struct | None, Callable]] = {}


def _opcode(*codes: bytes):
    """Registers a handler, called with the opcode's argument (or its code)."""

    def register(method):
        for code in codes:
            _DISPATCH[code[0]] = (_ARGUMENT.get(code), method)
        return method

    return register


class RestrictedUnpickler:
    """Runs a pickle's opcodes, building only dicts, lists, strings, numbers and
    plain numpy arrays (see the module docstring); anything else raises
    ``UnsafePickleError``, one line naming the file, what is wrong and where.

    ``RestrictedUnpickler(file).load()`` reads the whole file; arrays it returns
    may be read-only views of the file's bytes. Python 2 str is decoded as latin-1
    (the only ``encoding`` supported), as numpy's array data needs.
    """

    _GLOBALS: ClassVar[dict[tuple[str, str], _Global]] = {}

    def __init__(
        self,
        file: BinaryIO,
        *,
        encoding: str = "latin1",
        source: str | None = None,
        budget: MemoryBudget | None = None,
    ):
        if encoding.lower() not in _LATIN1:
            raise ValueError(f"encoding {encoding!r}: only latin-1 is supported")
        self._file = file
        self._source = source or str(getattr(file, "name", "<pickle>"))
        self._budget = budget

    def load(self) -> object:
        data = self._data = bytes(self._file.read())
        self._view = memoryview(data)
        self._budget = self._budget or MemoryBudget(len(data), self._source)
        self._pos = self._op_pos = 0
        self._stack: list = []
        self._marks: list[list] = []
        self._memo: dict[int, object] = {}
        try:
            while True:
                pos = self._op_pos = self._pos
                if pos >= len(data):
                    raise self._refuse("the pickle ends without STOP (truncated?)")
                argument, handler = _DISPATCH.get(data[pos], (None, None))
                if handler is None:
                    raise self._refuse(
                        "refusing this opcode: embedding files use only those of "
                        "dicts, lists, strings, numbers and numpy arrays"
                    )
                if argument is None:
                    self._pos = pos + 1
                    value = data[pos]
                else:
                    self._pos = pos + 1 + argument.size
                    if self._pos > len(data):
                        raise self._refuse("the pickle ends inside an opcode")
                    (value,) = argument.unpack_from(data, pos + 1)
                if handler(self, value):
                    return self._result
        except RefusedFileError:
            raise
        except (ValueError, TypeError, OverflowError, IndexError, KeyError) as error:
            raise self._refuse(
                f"malformed pickle ({type(error).__name__}: {one_line(error, 160)})"
            ) from None

    # ---- reading, refusing, charging

    def _refuse(self, what: str) -> UnsafePickleError:
        where = f"byte {self._op_pos}"
        if self._op_pos < len(self._data):
            code = chr(self._data[self._op_pos])
            op = pickletools.code2op.get(code)
            where = f"opcode {op.name if op else repr(code)} at {where}"
        return UnsafePickleError(f"{self._source}: {what} ({where})")

    def _take(self, size: int) -> memoryview:
        remaining = len(self._data) - self._pos
        if not 0 <= size <= remaining:
            raise self._refuse(
                f"a length of {size} bytes where {remaining} remain (truncated or forged)"
            )
        self._pos += size
        return self._view[self._pos - size : self._pos]

    def _line(self) -> bytes:
        end = self._data.find(b"\n", self._pos)
        if end < 0:
            raise self._refuse("a text opcode without its newline (truncated?)")
        line, self._pos = self._data[self._pos : end], end + 1
        return line

    def _charge(self, nbytes: int, what: str = "pickle objects") -> None:
        self._budget.spend(nbytes, what)

    def _push(self, value: object) -> None:
        self._budget.spend(_OBJECT_BYTES, "pickle objects")
        self._stack.append(value)

    def _pop(self) -> object:
        if not self._stack:
            raise self._refuse("stack underflow")
        return self._stack.pop()

    def _pop_mark(self) -> list:
        if not self._marks:
            raise self._refuse("no MARK to pop to")
        items, self._stack = self._stack, self._marks.pop()
        return items

    def _top(self, kind: type) -> object:
        if not self._stack or type(self._stack[-1]) is not kind:
            found = _short(self._stack[-1]) if self._stack else "nothing"
            raise self._refuse(f"a {kind.__name__} expected, found {found}")
        return self._stack[-1]

    # ---- framing, marks, numbers

    @_opcode(pickle.PROTO)
    def _proto(self, version):
        if version > pickle.HIGHEST_PROTOCOL:
            raise self._refuse(f"unknown pickle protocol {version}")

    @_opcode(pickle.FRAME)
    def _frame(self, size):
        pass  # frames only group opcodes, and the whole file is in memory

    @_opcode(pickle.STOP)
    def _stop(self, code):
        value = self._pop()
        if self._stack or self._marks:
            raise self._refuse("values left on the stack at STOP")
        if isinstance(value, dict):
            value = {key: self._finished(item) for key, item in value.items()}
        self._result = self._finished(value)
        return True

    def _finished(self, value: object) -> object:
        if isinstance(value, _PendingArray):
            if value.array is None:
                raise self._refuse("an array that never received its data")
            return value.array
        return value.dtype if isinstance(value, _PendingDtype) else value

    @_opcode(pickle.MARK)
    def _mark(self, code):
        self._charge(_OBJECT_BYTES)
        self._marks.append(self._stack)
        self._stack = []

    @_opcode(pickle.NONE, pickle.NEWTRUE, pickle.NEWFALSE)
    def _constant(self, code):
        self._push({pickle.NEWTRUE[0]: True, pickle.NEWFALSE[0]: False}.get(code))

    @_opcode(pickle.BININT, pickle.BININT1, pickle.BININT2, pickle.BINFLOAT)
    def _number(self, value):
        self._push(value)

    @_opcode(pickle.INT, pickle.LONG, pickle.FLOAT)
    def _text_number(self, code):
        line = self._line()
        self._charge(len(line))
        if code == pickle.FLOAT[0]:
            self._push(float(line))
        elif code == pickle.INT[0] and line in (b"00", b"01"):
            self._push(line == b"01")  # protocol 0 writes bools as INT
        else:
            self._push(int(line[:-1] if line.endswith(b"L") else line, 0))

    @_opcode(pickle.LONG1, pickle.LONG4)
    def _long(self, size):
        data = self._take(size)
        self._charge(size)
        self._push(int.from_bytes(data, "little", signed=True))

    # ---- strings and bytes

    @_opcode(pickle.STRING)
    def _string(self, code):
        line = self._line()
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise self._refuse("a STRING argument that is not quoted")
        self._charge(2 * len(line))
        self._push(codecs.escape_decode(line[1:-1])[0].decode("latin1"))

    @_opcode(pickle.BINSTRING, pickle.SHORT_BINSTRING)
    def _binstring(self, size):
        data = self._take(size)
        self._charge(size)
        self._push(str(data, "latin1"))

    @_opcode(pickle.UNICODE)
    def _unicode(self, code):
        line = self._line()
        self._charge(4 * len(line))
        self._push(str(line, "raw-unicode-escape"))

    @_opcode(pickle.BINUNICODE, pickle.SHORT_BINUNICODE, pickle.BINUNICODE8)
    def _binunicode(self, size):
        data = self._take(size)
        self._charge(4 * size)  # a UTF-8 byte decodes to at most 4 bytes of str
        self._push(str(data, "utf-8", "surrogatepass"))

    @_opcode(
        pickle.BINBYTES, pickle.SHORT_BINBYTES, pickle.BINBYTES8, pickle.BYTEARRAY8
    )
    def _binbytes(self, size):
        data = self._take(size)
        if size > _VIEW_BYTES:
            self._push(data)  # array data: a read-only view of the file's bytes
        else:
            self._charge(size)
            self._push(bytes(data))

    # ---- containers

    @_opcode(pickle.EMPTY_TUPLE, pickle.EMPTY_LIST, pickle.EMPTY_DICT)
    def _empty(self, code):
        self._push({pickle.EMPTY_LIST[0]: [], pickle.EMPTY_DICT[0]: {}}.get(code, ()))

    @_opcode(pickle.TUPLE, pickle.LIST)
    def _from_mark(self, code):
        items = self._pop_mark()
        self._push(tuple(items) if code == pickle.TUPLE[0] else items)

    @_opcode(pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)
    def _small_tuple(self, code):
        size = code - pickle.TUPLE1[0] + 1
        items = [self._pop() for _ in range(size)]
        self._push(tuple(reversed(items)))

    @_opcode(pickle.APPEND)
    def _append(self, code):
        value = self._pop()
        self._top(list).append(value)

    @_opcode(pickle.APPENDS)
    def _appends(self, code):
        items = self._pop_mark()
        self._top(list).extend(items)

    @_opcode(pickle.DICT)
    def _dict(self, code):
        items = self._pop_mark()
        self._push({})
        self._set_items(items)

    @_opcode(pickle.SETITEM)
    def _setitem(self, code):
        value = self._pop()
        self._set_items([self._pop(), value])

    @_opcode(pickle.SETITEMS)
    def _setitems(self, code):
        self._set_items(self._pop_mark())

    def _set_items(self, items: list) -> None:
        target = self._top(dict)
        if len(items) % 2:
            raise self._refuse("a dict key without its value")
        for key, value in zip(items[::2], items[1::2]):
            if key is not None and type(key) not in (str, bytes, int, float, bool):
                raise self._refuse(f"a dict key that is {_short(key)}")
            target[key] = value

    # ---- memo

    @_opcode(pickle.PUT, pickle.BINPUT, pickle.LONG_BINPUT, pickle.MEMOIZE)
    def _put(self, index):
        if self._data[self._op_pos] == pickle.PUT[0]:
            index = int(self._line())
        elif self._data[self._op_pos] == pickle.MEMOIZE[0]:
            index = len(self._memo)
        if not self._stack:
            raise self._refuse("nothing on the stack to memoize")
        self._charge(_OBJECT_BYTES)
        self._memo[index] = self._stack[-1]

    @_opcode(pickle.GET, pickle.BINGET, pickle.LONG_BINGET)
    def _get(self, index):
        if self._data[self._op_pos] == pickle.GET[0]:
            index = int(self._line())
        if index not in self._memo:
            raise self._refuse(f"a memo reference to {_short(index)}, never stored")
        value = self._memo[index]
        if type(value) in (tuple, list, dict):
            raise self._refuse(
                f"a {type(value).__name__} referenced a second time through the memo: "
                "embedding files share no containers, and shared references let a "
                "small file expand without bound ('billion laughs')"
            )
        if isinstance(value, _PendingArray) and value.array is not None:
            value = value.array
        self._push(value)

    # ---- globals, and the constructors they name

    @_opcode(pickle.GLOBAL)
    def _global(self, code):
        module = self._line().decode("utf-8")
        self._resolve(module, self._line().decode("utf-8"))

    @_opcode(pickle.STACK_GLOBAL)
    def _stack_global(self, code):
        name, module = self._pop(), self._pop()
        if type(name) is not str or type(module) is not str:
            raise self._refuse("a global whose module or name is not a str")
        self._resolve(module, name)

    def _resolve(self, module: str, name: str) -> None:
        found = self._GLOBALS.get((module, name))
        if found is None:
            raise self._refuse(
                f"refusing to load global {one_line(module + '.' + name, 120)!r}: an "
                "embedding file may hold only a dict of strings and numpy arrays "
                "(loading it would run code)"
            )
        self._push(found)

    @_opcode(pickle.REDUCE)
    def _reduce(self, code):
        args = self._pop()
        function = self._pop()
        if not isinstance(function, _Global):
            raise self._refuse(f"a call of {_short(function)}, not of a global")
        if function.call is None:
            raise self._refuse(
                f"refusing to call {function.name}: arrays are rebuilt only by numpy's "
                "_reconstruct, never from an offset, strides or buffer in the file"
            )
        if type(args) is not tuple:
            raise self._refuse(f"{function.name} called with {_short(args)}")
        self._push(function.call(self, args))

    @_opcode(pickle.BUILD)
    def _build(self, code):
        state = self._pop()
        target = self._stack[-1] if self._stack else None
        if isinstance(target, _PendingDtype) and not target.built:
            self._stack[-1] = self._dtype_from_state(target, state)
        elif isinstance(target, _PendingArray) and target.array is None:
            self._stack[-1] = target.array = self._array_from_state(state)
        else:
            raise self._refuse(
                f"BUILD of {_short(target)}: only numpy dtypes and arrays have a "
                "state, once, in an embedding file"
            )

    def _call_dtype(self, args: tuple) -> _PendingDtype:
        code = args[0] if args else None
        if type(code) is not str or not re.fullmatch(r"[<>|=]?[fiuUSO]\d{0,5}", code):
            raise self._refuse(
                f"numpy dtype {_short(code)}: embedding files hold only plain float "
                "and int arrays and string keys"
            )
        try:
            return _PendingDtype(np.dtype(code))
        except TypeError:
            raise self._refuse(f"numpy dtype {code!r} does not exist") from None

    def _dtype_from_state(self, pending: _PendingDtype, state: object) -> np.dtype:
        if (
            type(state) is not tuple
            or len(state) not in (8, 9)
            or state[0] not in (3, 4)
        ):
            raise self._refuse(f"a dtype state that is {_short(state)}")
        _, order, subarray, names, fields, size, _, _ = state[:8]  # 9th: metadata
        if subarray is not None or names is not None or fields is not None:
            raise self._refuse(
                "a dtype state with fields, names or a subarray: structured dtypes "
                "(whose fields may overlap) are refused"
            )
        if type(order) is not str or order not in ("<", ">", "|", "="):
            raise self._refuse(f"a dtype byte order {_short(order)}")
        dtype = pending.dtype
        if dtype.kind in "US":
            unit = 4 if dtype.kind == "U" else 1
            if type(size) is not int or size <= 0 or size % unit:
                raise self._refuse(f"a {dtype.kind} dtype of {_short(size)} bytes")
            dtype = np.dtype(f"{dtype.kind}{size // unit}")
        elif size not in (-1, dtype.itemsize):
            raise self._refuse(f"dtype {dtype} with items of {_short(size)} bytes")
        if order in "<>":
            dtype = dtype.newbyteorder(order)
        pending.dtype, pending.built = dtype, True
        return dtype

    def _call_reconstruct(self, args: tuple) -> _PendingArray:
        if len(args) != 3 or args[0] is not self._GLOBALS[("numpy", "ndarray")]:
            raise self._refuse("numpy _reconstruct of something other than ndarray")
        if _short(args[1]) != "(0,)" or _short(args[2]) not in ("'b'", "b'b'"):
            raise self._refuse("numpy _reconstruct with arguments numpy never writes")
        return _PendingArray()

    def _array_from_state(self, state: object) -> np.ndarray:
        versioned = type(state) is tuple and len(state) == 5 and _short(state[0]) == "1"
        if not versioned and (type(state) is not tuple or len(state) != 4):
            raise self._refuse(f"an array state that is {_short(state)}")
        shape, dtype, fortran, data = state[-4:]
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise self._refuse(f"an array order flag {_short(fortran)}")
        return self._array(shape, dtype, "F" if fortran else "C", data)

    def _call_frombuffer(self, args: tuple) -> np.ndarray:
        # Protocol 5 writes arrays as _frombuffer(data, dtype, shape, order).
        if len(args) != 4 or _short(args[3]) not in ("'C'", "'F'"):
            raise self._refuse("numpy _frombuffer with arguments numpy never writes")
        return self._array(args[2], args[1], args[3], args[0])

    def _call_scalar(self, args: tuple) -> np.generic:
        # numpy scalars (np.str_, np.int64, ...) pickle as scalar(dtype, item bytes).
        dtype = args[0] if len(args) == 2 else None
        dtype = dtype.dtype if isinstance(dtype, _PendingDtype) else dtype
        if not isinstance(dtype, np.dtype) or dtype.kind == "O":
            raise self._refuse("a numpy scalar other than a number or a string")
        return self._array((), dtype, "C", args[1])[()]

    def _array(self, shape: object, dtype: object, order: str, data: object):
        dtype = dtype.dtype if isinstance(dtype, _PendingDtype) else dtype
        if not isinstance(dtype, np.dtype):
            raise self._refuse(f"an array whose dtype is {_short(dtype)}")
        problem = array_dtype_problem(dtype, allow_object=True)
        if problem:
            raise self._refuse(f"an array of {problem}")
        if type(shape) is not tuple or len(shape) > 32:
            raise self._refuse(f"an array shape that is {_short(shape)}")
        if not all(type(n) is int and 0 <= n < 2**63 for n in shape):
            raise self._refuse(f"an array shape {_short(shape)}, not non-negative ints")
        count = math.prod(shape)
        if dtype.kind == "O":
            if type(data) is not list or len(data) != count:
                raise self._refuse(
                    f"an object array of shape {shape} without its items"
                )
            wrong = next((x for x in data if type(x) not in (str, bytes)), data)
            if wrong is not data:
                raise self._refuse(
                    f"an object array holding {_short(wrong)}: object arrays may hold "
                    "only strings (the keys)"
                )
            self._charge(8 * count, f"an object array of shape {shape}")
            array = np.empty(count, dtype=object)
            array[:] = data
            return array.reshape(shape, order=order)
        if type(data) is str:  # Python 2 str and protocol 0 text, as latin-1
            self._charge(len(data), f"the data of an array of shape {shape}")
            data = data.encode("latin1")
        if type(data) not in (bytes, memoryview):
            raise self._refuse(f"array data that is {_short(data)}, not bytes")
        if len(data) != count * dtype.itemsize:
            raise self._refuse(
                f"an array of shape {shape} and dtype {dtype} needs "
                f"{count * dtype.itemsize} bytes of data but the file gives {len(data)}"
            )
        return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)

    def _call_empty_bytes(self, args: tuple) -> bytes:
        # Protocols 0-2 write the empty data of an empty array as bytes().
        if args:
            raise self._refuse("bytes() with arguments; only the empty bytes is read")
        return b""

    def _call_codecs_encode(self, args: tuple) -> bytes:
        # Protocols 0-2 written by Python 3 store bytes as _codecs.encode(text, "latin1").
        if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not str:
            raise self._refuse("_codecs.encode with arguments other than (str, str)")
        if args[1].lower() not in _LATIN1:
            raise self._refuse(
                f"refusing _codecs.encode with encoding {_short(args[1])}: only latin-1 "
                "(protocol-2 bytes) is allowed in an embedding file"
            )
        self._charge(len(args[0]), "the bytes of a protocol-2 pickle")
        return args[0].encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], _Global]:
    unpickler = RestrictedUnpickler
    allowed = {
        ("numpy", "ndarray"): _Global("numpy.ndarray"),  # _reconstruct's argument
        ("numpy", "dtype"): _Global("numpy.dtype", unpickler._call_dtype),
        ("_codecs", "encode"): _Global("_codecs.encode", unpickler._call_codecs_encode),
        ("builtins", "bytes"): _Global("bytes", unpickler._call_empty_bytes),
        ("__builtin__", "bytes"): _Global("bytes", unpickler._call_empty_bytes),
    }
    for package in ("numpy.core", "numpy._core"):  # numpy 2 renamed numpy.core
        for module, name, call in [
            ("multiarray", "_reconstruct", unpickler._call_reconstruct),
            ("multiarray", "scalar", unpickler._call_scalar),
            ("numeric", "_frombuffer", unpickler._call_frombuffer),
        ]:
            allowed[(f"{package}.{module}", name)] = _Global(f"numpy.{name}", call)
    return allowed


RestrictedUnpickler._GLOBALS = _allowed_globals()
