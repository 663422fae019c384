"""Request limits of an export, checked in the graph before any work.

A served signature decodes what a request carries and runs the model on all
of it at once, so the request decides the server's memory: a 400 KB PNG
whose header claims 20000 x 20000 pixels decodes to 400 MB of bytes (1.6 GB
as floats), and 100,000 queries hold the activations of 100,000 examples.
``limited`` wraps each serving function so that, before it runs:

* every input named ``support_*`` holds at most ``max_support_examples``
  examples, every other batched input at most ``max_query_examples``;
* every element of an input named ``*_images`` is a PNG or JPEG whose
  header (PNG's IHDR; JPEG's frame header, read by libjpeg through
  ``tf.io.extract_jpeg_shape``) gives at most ``max_image_pixels`` pixels:
  the decoder allocates what the header says, so nothing is decoded before
  this check;
* every float input holds finite values of at most ``max_abs_input`` in
  absolute value (3e38 is finite, but overflows the first layer);

and after it, that every float output (logits, probabilities, regression
``y``) is finite; every output waits for that check, so a request fetching
only ``classes`` cannot get the class of a NaN. A failed check is an
``InvalidArgumentError`` naming the input, the limit and the value sent (TF
Serving answers INVALID_ARGUMENT). The checks are TF ops (no Python at
serving time); each brings one scalar to the host.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"  # what tf.io.is_jpeg and tf.io.decode_image test
_PNG_HEADER = 24  # signature, IHDR length and type, width, height (big-endian)
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: a PNG's last 8 bytes
_SHOWN = 64  # values shown in an error message


@dataclasses.dataclass(frozen=True)
class ServingLimits:
    """The largest request an export answers (recorded in its metadata).

    Attributes:
      max_support_examples: support examples S of one request; 1000 holds
        20-way 50-shot. Adaptation keeps the support set's activations for
        its gradient, so memory grows with S.
      max_query_examples: queries Q of one request. Outputs of
        non-transductive exports do not depend on the other queries, so a
        client with more sends several requests.
      max_image_pixels: height x width of one encoded image, read from its
        header. 4096 x 4096 (16.8 million; a 12-megapixel photo fits) is
        17 MB of bytes and 67 MB of floats per gray image, decoded two at a
        time.
      max_abs_input: largest absolute value of a float input. Inputs are
        pixels in [0, 1], embeddings or regression values; 1e6 keeps a
        float32 network's activations far from overflow.
    """

    max_support_examples: int = 1000
    max_query_examples: int = 1000
    max_image_pixels: int = 4096 * 4096
    max_abs_input: float = 1e6

    def __post_init__(self):
        for name in ("max_support_examples", "max_query_examples", "max_image_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        value = self.max_abs_input
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value < float("inf")
        ):
            raise ValueError(
                f"max_abs_input must be a positive finite number, got {value!r}"
            )

    def metadata(self) -> dict[str, Any]:
        """The limits as metadata values (ints, and ``max_abs_input`` a float)."""
        return {**dataclasses.asdict(self), "max_abs_input": float(self.max_abs_input)}


def after(checks: Sequence[Any], *tensors: tf.Tensor) -> list[tf.Tensor]:
    """``tensors`` that can only be computed once every check has passed."""
    with tf.control_dependencies(checks):
        return [tf.identity(t) for t in tensors]


# ----------------------------------------------------------------- images
def header_bytes(encoded: tf.Tensor) -> tf.Tensor:
    """int32 ``[batch, 24]``: the first 24 bytes of each string (0 past its end)."""
    head = tf.io.decode_raw(encoded, tf.uint8, fixed_length=_PNG_HEADER)
    return tf.cast(tf.reshape(head, [-1, _PNG_HEADER]), tf.int32)


def _starts_with(head: tf.Tensor, start: int, expected: bytes) -> tf.Tensor:
    return tf.reduce_all(
        tf.equal(head[:, start : start + len(expected)], list(expected)), axis=1
    )


def image_formats(encoded: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """bool ``[batch]`` each: (a PNG whose first chunk is IHDR, a JPEG)."""
    head = header_bytes(encoded)
    is_png = tf.logical_and(
        _starts_with(head, 0, PNG_SIGNATURE), _starts_with(head, 12, b"IHDR")
    )
    return is_png, _starts_with(head, 0, JPEG_SIGNATURE)


def png_complete(encoded: tf.Tensor) -> tf.Tensor:
    """bool ``[batch]``: each string ends with a PNG's IEND chunk (a
    truncated PNG does not; the decoder's own error would name no input)."""
    length = tf.strings.length(encoded)
    start = tf.maximum(length - len(_PNG_END), 0)
    tail = tf.strings.substr(encoded, start, tf.fill(tf.shape(start), len(_PNG_END)))
    return tf.equal(tail, _PNG_END)


def png_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """int64 ``[batch]``: width x height of each PNG ``[batch]``, from its
    IHDR header (bytes 16-23; missing bytes read as 0)."""
    head = tf.cast(header_bytes(encoded), tf.int64)

    def big_endian(start: int) -> tf.Tensor:
        return tf.add_n([head[:, start + i] * 256 ** (3 - i) for i in range(4)])

    return big_endian(16) * big_endian(20)


def jpeg_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """int64 ``[batch]``: height x width of each JPEG ``[batch]``, from its frame
    header as the decoder reads it (an unreadable header is an
    InvalidArgumentError)."""
    shapes = tf.map_fn(
        lambda image: tf.io.extract_jpeg_shape(image, output_type=tf.int64)[:2],
        encoded,
        fn_output_signature=tf.TensorSpec([2], tf.int64),
    )
    return tf.reduce_prod(tf.reshape(shapes, [-1, 2]), axis=1)


def image_pixels(encoded: tf.Tensor) -> tf.Tensor:
    """int64 ``[batch]``: height x width of each image ``[batch]`` from its
    header: a PNG's IHDR (``image_formats``), any other as a JPEG."""
    is_png, _ = image_formats(encoded)
    png = tf.cast(tf.where(is_png)[:, 0], tf.int32)
    jpeg = tf.cast(tf.where(tf.logical_not(is_png))[:, 0], tf.int32)
    return tf.dynamic_stitch(
        [png, jpeg],
        [png_pixels(tf.gather(encoded, png)), jpeg_pixels(tf.gather(encoded, jpeg))],
    )


def check_images(name: str, encoded: tf.Tensor, max_pixels: int) -> tf.Operation:
    """Checks every element of ``encoded`` ``[batch]`` is a PNG or JPEG whose
    header gives at most ``max_pixels`` pixels, and every PNG is complete
    (ends with its IEND chunk), decoding none."""
    is_png, is_jpeg = image_formats(encoded)
    known = tf.debugging.assert_equal(
        tf.logical_or(is_png, is_jpeg),
        True,
        message=f"every element of {name} must be a PNG or JPEG image "
        "(x: false where it is not)",
        summarize=_SHOWN,
    )
    complete = tf.debugging.assert_equal(
        tf.logical_or(tf.logical_not(is_png), png_complete(encoded)),
        True,
        message=f"every PNG of {name} must be complete, ending with its IEND chunk "
        "(x: false where one is truncated)",
        summarize=_SHOWN,
    )
    with tf.control_dependencies([known, complete]):
        pixels = image_pixels(encoded)
        return tf.debugging.assert_less_equal(
            pixels,
            tf.constant(max_pixels, tf.int64),
            message=f"every image of {name} must have at most {max_pixels} pixels "
            "(max_image_pixels; x: height x width of each, read from its header)",
            summarize=_SHOWN,
        )


# -------------------------------------------------------- inputs, outputs
def check_count(name: str, x: tf.Tensor, limits: ServingLimits) -> tf.Operation:
    """``x``'s first dimension within the support or the query limit (by its name)."""
    if name.startswith("support"):
        limit, field = limits.max_support_examples, "max_support_examples"
    else:
        limit, field = limits.max_query_examples, "max_query_examples"
    return tf.debugging.assert_less_equal(
        tf.shape(x, out_type=tf.int64)[0],
        tf.constant(limit, tf.int64),
        message=f"{name} must hold at most {limit} examples ({field}; x: the number sent)",
    )


def check_values(name: str, x: tf.Tensor, max_abs: float) -> tf.Operation:
    """Every value of float ``x`` finite and at most ``max_abs`` in absolute value."""
    largest = tf.reduce_max(
        tf.where(tf.math.is_finite(x), tf.abs(x), tf.constant(float("inf"), x.dtype))
    )
    return tf.debugging.assert_less_equal(
        largest,
        tf.constant(max_abs, x.dtype),
        message=f"{name} must hold finite values of at most {max_abs:g} in absolute "
        "value (max_abs_input; x: the largest sent, inf where not finite)",
    )


def check_request(
    inputs: Mapping[str, tf.Tensor], limits: ServingLimits
) -> list[tf.Operation]:
    """The checks of a request's inputs: counts first, then what they hold."""
    counts = [
        check_count(name, x, limits)
        for name, x in inputs.items()
        if x.shape.rank is None or x.shape.rank > 0
    ]
    contents = []
    with tf.control_dependencies(counts):
        for name, x in inputs.items():
            if x.dtype == tf.string and name.endswith("_images"):
                contents.append(check_images(name, x, limits.max_image_pixels))
            elif x.dtype.is_floating:
                contents.append(check_values(name, x, limits.max_abs_input))
    return counts + contents


def check_outputs(outputs: Any) -> Any:
    """``outputs`` (a structure of tensors), each available once every float
    one is known to be finite."""
    values = tf.nest.flatten(outputs)  # a dict's values in the order of its keys
    names = sorted(outputs) if isinstance(outputs, Mapping) else range(len(values))
    named = list(zip(names, values))
    checks = [
        tf.debugging.assert_all_finite(
            value,
            f"output {name} is not finite: the request's values overflow the "
            "model's float32 computation",
        )
        for name, value in named
        if value.dtype.is_floating
    ]
    return tf.nest.pack_sequence_as(
        outputs, after(checks, *(value for _, value in named))
    )


def limited(name: str, function: Callable, limits: ServingLimits) -> Callable:
    """``function`` (a ``tf.function`` with an input signature of named
    tensors) behind ``check_request`` and ``check_outputs``: a ``tf.function``
    with the same inputs and outputs."""
    specs = getattr(function, "input_signature", None)
    if specs is None or not all(isinstance(s, tf.TensorSpec) for s in specs):
        raise ValueError(
            f"serving function {name!r} must be a tf.function with an input_signature "
            f"of TensorSpecs, got {function!r}"
        )
    signature = inspect.signature(function.python_function)
    names = [
        spec.name or parameter for spec, parameter in zip(specs, signature.parameters)
    ]

    def checked(*args):
        args = after(check_request(dict(zip(names, args)), limits), *args)
        return check_outputs(function(*args))

    checked.__name__ = name
    checked.__signature__ = signature  # callable by keyword, as ``function``
    return tf.function(checked, input_signature=specs)
