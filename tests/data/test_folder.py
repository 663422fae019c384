"""Tests of tfmeta.data.folder.load_image_folder on tiny PNG and JPEG files."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import load_image_folder


def _blocks(values: np.ndarray) -> np.ndarray:
    """Each pixel of `values` [h, w, c] becomes a 2x2 block: [2h, 2w, c] uint8."""
    return np.repeat(np.repeat(values, 2, axis=0), 2, axis=1).astype(np.uint8)


def _write(path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_png if path.suffix == ".png" else tf.io.encode_jpeg
    path.write_bytes(encode(image).numpy())


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    small = [rng.integers(0, 256, (4, 4, 3)) for _ in range(3)]
    for i, values in enumerate(small):
        _write(tmp_path / "cat" / f"{i}.png", _blocks(values))
    # JPEG of a constant colour decodes (almost) exactly.
    _write(tmp_path / "dog" / "b.JPG", np.full((8, 8, 3), 200, np.uint8))
    _write(tmp_path / "dog" / "a.jpeg", np.full((8, 8, 3), 40, np.uint8))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    _write(tmp_path / "dog" / ".hidden.png", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / ".cache" / "x.png", np.zeros((8, 8, 3), np.uint8))
    return tmp_path, small


def test_loads_classes_sorted_and_area_downsamples(folder):
    root, small = folder
    classes = load_image_folder(
        root, image_size=(4, 4), channels=3, extensions=(".png", ".jpg", ".jpeg")
    )
    assert classes.class_names == ("cat", "dog")
    np.testing.assert_array_equal(classes.class_offsets, [0, 3, 5])
    assert classes.images.shape == (5, 4, 4, 3) and classes.images.dtype == np.float32
    # 8x8 images of 2x2 constant blocks shrink exactly to the block values / 255.
    for i, values in enumerate(small):
        np.testing.assert_allclose(classes.images[i], values / 255.0, atol=1e-6)
    # Files sorted by name: a.jpeg (40) then b.JPG (200); no inversion.
    np.testing.assert_allclose(
        classes.images[3:].mean(axis=(1, 2, 3)), [40 / 255, 200 / 255], atol=2 / 255
    )


def test_enlarging_and_grayscale(folder):
    root, small = folder
    classes = load_image_folder(root, image_size=16, channels=1)
    assert classes.image_shape == (16, 16, 1)
    assert 0.0 <= classes.images.min() and classes.images.max() <= 1.0
    # A constant image stays constant when enlarged.
    np.testing.assert_allclose(classes.images[4], 200 / 255, atol=2 / 255)
    # Grayscale by the decoder (ITU-R 601 weights, within rounding), then bilinear.
    gray = tf.image.rgb_to_grayscale(_blocks(small[0]).astype(np.float32) / 255.0)
    np.testing.assert_allclose(
        classes.images[0], tf.image.resize(gray, [16, 16]), atol=1.5 / 255
    )


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing does not exist"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="holds no class folder"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "readme.md").write_text("x")
    with pytest.raises(
        FileNotFoundError,
        match=r"empty_class holds no image with an extension in \('.png',",
    ):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot decode .*broken.png"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="channels must be 1, 3 or 4, got 2"):
        load_image_folder(tmp_path, channels=2)
    with pytest.raises(ValueError, match=r"image_size must be .* got \(0, 4\)"):
        load_image_folder(tmp_path, image_size=(0, 4))
