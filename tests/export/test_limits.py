"""Request limits: bombs refused before any work, in bounded memory; sizes read from headers."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

from tests.export import in_memory_learner, omniglot_png, trained_exports
from tests.helpers import REPO
from tfmeta.export import (
    METADATA_FILE,
    ImagePreprocessing,
    ServingLimits,
    export_learner,
    limits,
)

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")

# The process's own peak during any request, the export loaded: 1072 MB
# measured, during the refused request of 100000 queries (313 MB of floats).
PEAK_MB = 1500
BIG = 100_000  # examples of an oversized request

# Runs in a fresh interpreter: each request against the export, with the
# process's own resident memory before it and its own peak during it
# (tests.memory: VmHWM, set back to the resident size before each request;
# where the kernel does not allow that, the peak since exec).
_REQUESTS = r"""
import json, sys
from tests.memory import peak_resident_mib, reset_peak, resident_mib
import tensorflow as tf

export, folder, output = sys.argv[1:4]
model = tf.saved_model.load(export)
huge_png = open(folder + "/huge.png", "rb").read()
huge_jpeg = open(folder + "/huge.jpg", "rb").read()
paper = tf.io.encode_png(tf.fill([105, 105, 1], tf.constant(255, tf.uint8)))
images, labels, x = tf.stack([paper] * 3), tf.range(3), tf.zeros([3, 28, 28, 1])
big = 100_000
requests = {
    "answered": ("images", lambda: dict(support_images=images, support_y=labels, query_images=images)),
    "huge png": ("images", lambda: dict(support_images=images, support_y=labels, query_images=[huge_png])),
    "huge jpeg": ("images", lambda: dict(support_images=[paper, paper, huge_jpeg], support_y=labels, query_images=images)),
    "five huge pngs": ("images", lambda: dict(support_images=[huge_png] * 5, support_y=tf.range(5) % 3, query_images=images)),
    "many query images": ("images", lambda: dict(support_images=images, support_y=labels, query_images=tf.fill([big], paper))),
    "3e38": ("tensors", lambda: dict(support_x=tf.fill([3, 28, 28, 1], 3e38), support_y=labels, query_x=x)),
    "many queries": ("tensors", lambda: dict(support_x=x, support_y=labels, query_x=tf.zeros([big, 28, 28, 1]))),
    "many support": ("tensors", lambda: dict(support_x=tf.zeros([big, 28, 28, 1]), support_y=tf.range(big) % 3, query_x=x)),
}
signatures = {"images": "adapt_and_predict_images", "tensors": "adapt_and_predict"}
results = {}
for name, (kind, inputs) in requests.items():
    before_mb, reset = resident_mib(), reset_peak()
    try:
        outputs = model.signatures[signatures[kind]](**{k: tf.convert_to_tensor(v) for k, v in inputs().items()})
        results[name] = {"answered": sorted(outputs)}
    except tf.errors.InvalidArgumentError as error:
        results[name] = {"error": error.message}
    results[name].update(before_mb=before_mb, peak_mb=peak_resident_mib(), reset=reset)
with open(output, "w") as f:
    json.dump(results, f)
"""

PIXELS = r"at most 16777216 pixels \(max_image_pixels; x: height x width of each, read from its header\).*\[400000000"
REFUSED = {
    "huge png": "every image of query_images must have " + PIXELS,
    "huge jpeg": r"every image of support_images must have .*\[11025 11025 400000000\]",
    "five huge pngs": r"every image of support_images must have .*\[(400000000 ){4}400000000\]",
    "many query images": rf"query_images must hold at most 1000 examples \(max_query_examples; x: the number sent\).*\[{BIG}\]",
    "3e38": r"support_x must hold finite values of at most 1e\+06 in absolute value .*\[3e\+38\]",
    "many queries": rf"query_x must hold at most 1000 examples .*\[{BIG}\]",
    "many support": rf"support_[xy] must hold at most 1000 examples \(max_support_examples.*\[{BIG}\]",
}


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data))
    )


def png_bomb(side: int) -> bytes:
    """A valid black 1-bit PNG of ``side`` x ``side`` (a multiple of 800): 49 KB
    at 20000, decoded to 8 bits per pixel, 400 MB."""
    compressor = zlib.compressobj(9)
    rows = bytes(side // 8 + 1) * 100  # filter byte 0, then 0 bits
    data = b"".join(compressor.compress(rows) for _ in range(side // 100))
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        limits.PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data + compressor.flush())
        + _chunk(b"IEND", b"")
    )


def jpeg_bomb(side: int) -> bytes:
    """An 8 x 8 gray JPEG whose frame header claims ``side`` x ``side`` (333 bytes)."""
    data = bytearray(tf.io.encode_jpeg(tf.zeros([8, 8, 1], tf.uint8)).numpy())
    position = 2
    while data[position + 1] != 0xC0:  # segments up to the baseline frame header
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
    data[position + 5 : position + 9] = struct.pack(">HH", side, side)
    return bytes(data)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")


def test_bombs_are_refused_in_bounded_memory(exports, tmp_path):
    (tmp_path / "huge.png").write_bytes(png_bomb(20000))
    (tmp_path / "huge.jpg").write_bytes(jpeg_bomb(20000))
    done = subprocess.run(
        [sys.executable, "-c", _REQUESTS, str(exports["maml"].path), str(tmp_path)]
        + [str(tmp_path / "results.json")],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["answered"]["answered"] == ["classes", "logits", "probabilities"]
    for name, message in REFUSED.items():
        assert "error" in results[name], f"{name} was answered"
        assert re.search(message, results[name]["error"], re.DOTALL), results[name]
    if any(result["peak_mb"] is None for result in results.values()):
        pytest.skip("no VmHWM in /proc/self/status: the peak memory is not measured")
    peaks = {
        name: (round(result["before_mb"]), round(result["peak_mb"]))
        for name, result in results.items()
    }  # MB: resident before the request, peak during it
    print("resident before, peak during each request (MB):", peaks)
    assert max(peak for _, peak in peaks.values()) < PEAK_MB, peaks


def test_the_bombs_are_what_they_claim():
    small = png_bomb(800)  # the same construction, small enough to decode here
    assert tf.io.decode_png(small).shape == (800, 800, 1)
    assert len(png_bomb(20000)) < 60_000
    jpeg = jpeg_bomb(20000)
    assert len(jpeg) < 400
    assert tf.io.extract_jpeg_shape(jpeg).numpy().tolist() == [20000, 20000, 1]


def _png(height: int, width: int, channels: int = 1, dtype=np.uint8) -> bytes:
    pixels = np.random.default_rng(height * width).integers(
        0, 255, (height, width, channels)
    )
    return tf.io.encode_png(pixels.astype(dtype)).numpy()


def _jpeg(height: int, width: int, channels: int = 3, **options) -> bytes:
    pixels = np.random.default_rng(height + width).integers(
        0, 255, (height, width, channels)
    )
    return tf.io.encode_jpeg(pixels.astype(np.uint8), **options).numpy()


def test_pixels_read_from_headers_equal_the_decoded_sizes():
    images = [
        _png(1, 1),
        _jpeg(33, 64),
        _png(7, 300, 3),
        _png(300, 7, 4, np.uint16),
        _jpeg(1, 1, 1),
        _jpeg(120, 45, progressive=True),
        omniglot_png(np.random.default_rng(0)),
        _jpeg(105, 105, 1, optimize_size=True),
    ]
    decoded = [tf.io.decode_image(image).shape for image in images]
    pixels = limits.image_pixels(tf.constant(images)).numpy()
    assert pixels.tolist() == [shape[0] * shape[1] for shape in decoded]
    assert limits.image_pixels(tf.constant([], tf.string)).shape == (0,)


@pytest.fixture(scope="module")
def tight(exports, tmp_path_factory):
    """The MAML export again, with small limits: (loaded model, metadata)."""
    exported = export_learner(
        in_memory_learner(exports["maml"]),
        str(tmp_path_factory.mktemp("tight") / "maml"),
        image_preprocessing=ImagePreprocessing("omniglot", 28),
        limits=ServingLimits(
            max_support_examples=3,
            max_query_examples=2,
            max_image_pixels=105 * 105,
            max_abs_input=2.0,
        ),
    )
    return tf.saved_model.load(exported.path), exported


def _call(model, signature: str, **inputs):
    return model.signatures[signature](
        **{k: tf.convert_to_tensor(v) for k, v in inputs.items()}
    )


def test_limits_are_in_the_metadata(exports, tight):
    model, exported = tight
    expected = {
        "max_support_examples": 3,
        "max_query_examples": 2,
        "max_image_pixels": 105 * 105,
        "max_abs_input": 2.0,
    }
    served = {k: v.numpy() for k, v in model.signatures["metadata"]().items()}
    with open(os.path.join(exported.path, METADATA_FILE)) as f:
        stored = json.load(f)
    for key, value in expected.items():
        assert served[key] == value and stored[key] == value, key
    defaults = json.loads((exports["leo"].path / METADATA_FILE).read_text())
    assert {key: defaults[key] for key in expected} == ServingLimits().metadata()
    assert ServingLimits().metadata() == {
        "max_support_examples": 1000,
        "max_query_examples": 1000,
        "max_image_pixels": 4096 * 4096,
        "max_abs_input": 1e6,
    }


def test_requests_at_a_limit_are_answered_and_one_beyond_refused(tight):
    model, _ = tight
    labels = np.arange(3, dtype=np.int32)
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    x[0, 0, 0, 0] = 2.0  # max_abs_input
    answered = _call(
        model, "adapt_and_predict", support_x=x, support_y=labels, query_x=x[:2]
    )
    assert answered["classes"].shape == (2,)
    refused = {
        "support_[xy] must hold at most 3 examples": {
            "support_x": np.concatenate([x, x[:1]]),
            "support_y": np.array([0, 1, 2, 0], np.int32),
            "query_x": x[:2],
        },
        "query_x must hold at most 2 examples": {
            "support_x": x,
            "support_y": labels,
            "query_x": x,
        },
        r"query_x must hold finite values of at most 2 in absolute value .*\[2\.5\]": {
            "support_x": x,
            "support_y": labels,
            "query_x": np.where(x[:2] == 2.0, 2.5, x[:2]).astype(np.float32),
        },
        r"support_x must hold finite values of at most 2 .*\[inf\]": {
            "support_x": np.where(x == 2.0, np.nan, x).astype(np.float32),
            "support_y": labels,
            "query_x": x[:2],
        },
    }
    for message, inputs in refused.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _call(model, "adapt_and_predict", **inputs)


def test_images_at_the_pixel_limit_are_answered_and_larger_ones_refused(tight):
    model, _ = tight
    at_limit = [_png(105, 105), _jpeg(105, 105, 1), _png(35, 315)]
    labels = np.arange(3, dtype=np.int32)
    answered = _call(
        model,
        "adapt_and_predict_images",
        support_images=at_limit,
        support_y=labels,
        query_images=at_limit[:2],
    )
    assert answered["classes"].shape == (2,)
    for larger in (_png(105, 106), _jpeg(106, 105, 1)):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=rf"every image of query_images must have at most 11025 pixels.*\[11025 {106 * 105}\]",
        ):
            _call(
                model, "adapt_and_predict_images", support_images=at_limit, support_y=labels,
                query_images=[at_limit[0], larger],
            )  # fmt: skip


# Images tf.io.decode_image decodes but the export refuses: it reads the size of PNG and JPEG only.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
BMP = (
    b"BM" + struct.pack("<IHHI", 58, 0, 0, 54)
    + struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 0, 0, 0, 0)
    + b"\x00\x00\xff\x00"
)  # fmt: skip


@pytest.mark.parametrize(
    "image",
    [GIF, BMP, b"\x89PNG\r\n\x1a\n" + b"\x00" * 30],
    ids=["gif", "bmp", "png without IHDR"],
)
def test_formats_whose_size_is_not_read_are_refused(tight, image):
    model, _ = tight
    if image in (GIF, BMP):
        assert tf.io.decode_image(image).shape[:2] == (1, 1)
    images = [_png(28, 28)] * 3
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match="every element of query_images must be a PNG or JPEG image",
    ):
        _call(
            model, "adapt_and_predict_images", support_images=images,
            support_y=np.arange(3, dtype=np.int32), query_images=[images[0], image],
        )  # fmt: skip


def test_non_finite_outputs_are_refused(exports, tmp_path):
    # Inputs the limits let through (max_abs_input 3e38) overflow a regression's adaptation.
    exported = export_learner(
        in_memory_learner(exports["sinusoid"]),
        str(tmp_path / "sine"),
        limits=ServingLimits(max_abs_input=3e38),
    )
    model = tf.saved_model.load(exported.path)
    x = np.linspace(-5, 5, 10, dtype=np.float32)[:, None]
    answered = _call(
        model, "adapt_and_predict", support_x=x, support_y=np.sin(x), query_x=x
    )
    assert np.isfinite(answered["y"].numpy()).all()
    with pytest.raises(tf.errors.InvalidArgumentError, match="output y is not finite"):
        _call(
            model,
            "adapt_and_predict",
            support_x=x,
            support_y=np.full_like(x, 3e38),
            query_x=x,
        )


def test_an_output_without_floats_waits_for_the_finite_check():
    # TF Serving fetches only the outputs a request names: "classes" alone
    # must not answer for NaN logits.
    @tf.function
    def classes_only(logits):
        outputs = {
            "logits": logits,
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
        }
        return limits.check_outputs(outputs)["classes"]

    assert classes_only(tf.constant([[0.0, 1.0]])).numpy().tolist() == [1]
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="output logits is not finite"
    ):
        classes_only(tf.constant([[np.nan, 1.0]]))


@pytest.mark.parametrize("name", ["leo", "sinusoid"])
def test_every_export_refuses_overflowing_inputs(exports, name):
    model = tf.saved_model.load(str(exports[name].path))
    inputs = {
        "leo": {
            "support_x": np.full((3, 6), 3e38, np.float32), "support_y": np.arange(3, dtype=np.int32),
            "query_x": np.zeros((1, 6), np.float32),
        },
        "sinusoid": {
            "support_x": np.zeros((5, 1), np.float32), "support_y": np.full((5, 1), 3e38, np.float32),
            "query_x": np.zeros((1, 1), np.float32),
        },
    }[name]  # fmt: skip
    field = "support_x" if name == "leo" else "support_y"
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=rf"{field} must hold finite values of at most 1e\+06 in absolute value",
    ):
        _call(model, "adapt_and_predict", **inputs)


@pytest.mark.parametrize(
    "change",
    [
        {"max_query_examples": 0},
        {"max_support_examples": -1},
        {"max_image_pixels": 1.5},
        {"max_support_examples": True},
        {"max_abs_input": float("inf")},
        {"max_abs_input": 0.0},
    ],
)
def test_limits_must_be_positive(change):
    (field,) = change
    with pytest.raises(ValueError, match=f"{field} must be a positive"):
        ServingLimits(**change)
