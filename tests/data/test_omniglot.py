"""Tests of the Omniglot preprocessing and loaders in tfmeta.data.omniglot."""

import collections
import contextlib
import os
import pathlib
import zipfile
import zlib
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfmeta.data import (
    load_omniglot_folder,
    load_omniglot_tfds,
    preprocess_omniglot_image,
)
from tfmeta.data import omniglot_tfds as omniglot_module

# One worker computes the real minimal sets' characters (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("omniglot")

MINIMAL_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")


# --- preprocessing -------------------------------------------------------------------


def test_preprocess_inverts_and_area_averages():
    # 4x4 uint8, 0 = ink. Top-left 2x2 block all ink, top-right block half ink.
    image = np.full((4, 4), 255, np.uint8)
    image[:2, :2] = 0
    image[0, 2:] = 0
    image[3, 3] = 51  # 1 - 51 / 255 = 0.8 ink, a quarter of its block.
    out = preprocess_omniglot_image(image, image_size=2).numpy()
    assert out.shape == (2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[1.0, 0.5], [0.0, 0.2]], atol=1e-6)


def test_preprocess_same_for_png_gray_rgb_and_batches():
    rng = np.random.default_rng(0)
    gray = np.where(rng.random((105, 105, 1)) < 0.1, 0, 255).astype(np.uint8)
    from_gray = preprocess_omniglot_image(gray).numpy()
    assert from_gray.shape == (28, 28, 1)
    from_png = preprocess_omniglot_image(tf.io.encode_png(gray)).numpy()
    from_rgb = preprocess_omniglot_image(np.repeat(gray, 3, axis=-1)).numpy()
    np.testing.assert_array_equal(from_png, from_gray)
    np.testing.assert_array_equal(from_rgb, from_gray)
    # Ink fraction is preserved by area averaging: mean ink == fraction of ink pixels.
    np.testing.assert_allclose(from_gray.mean(), (gray == 0).mean(), rtol=1e-5)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def batch_fn(images):
        return preprocess_omniglot_image(images)

    batch = batch_fn(
        np.stack([np.repeat(gray, 3, -1), 255 - np.repeat(gray, 3, -1)])
    ).numpy()
    np.testing.assert_array_equal(batch[0], from_gray)
    np.testing.assert_allclose(batch[1], 1.0 - from_gray, atol=1e-6)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="image_size must be a positive int, got 0"):
        preprocess_omniglot_image(np.zeros((4, 4), np.uint8), image_size=0)
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        preprocess_omniglot_image(np.zeros((4,), np.uint8))


# --- a tiny fake Omniglot ----------------------------------------------------------------

# source -> {(alphabet, character): number of drawings}. Alpha/character01 of small1 and
# Greek/character01 of small2 duplicate characters of an earlier archive (same files).
FAKE = {
    "background": {
        ("Alpha", "character01"): 3,
        ("Alpha", "character02"): 3,
        ("Beta", "character01"): 2,
    },
    "evaluation": {("Gamma", "character01"): 3},
    "small1": {("Alpha", "character01"): 3, ("Greek", "character01"): 2},
    "small2": {("Greek", "character01"): 2, ("Latin", "character03"): 4},
}
ARCHIVE_OF = {
    "background": "images_background",
    "evaluation": "images_evaluation",
    "small1": "images_background_small1",
    "small2": "images_background_small2",
}
EXPECTED = [  # (name, source, number of images) after dedup, sorted.
    ("Alpha/character01", "background", 3),
    ("Alpha/character02", "background", 3),
    ("Beta/character01", "background", 2),
    ("Gamma/character01", "evaluation", 3),
    ("Greek/character01", "small1", 2),
    ("Latin/character03", "small2", 4),
]
KEYS = sorted({key for characters in FAKE.values() for key in characters})
ALPHABETS = sorted(
    {alphabet for alphabet, _ in KEYS} | {f"Filler{i:02d}" for i in range(45)}
)


def _drawing(alphabet: str, character: str, drawer: int) -> np.ndarray:
    """A deterministic 105x105 binary uint8 drawing, 0 = ink, 255 = paper."""
    rng = np.random.default_rng(zlib.crc32(f"{alphabet}/{character}/{drawer}".encode()))
    return np.where(rng.random((105, 105, 1)) < 0.15, 0, 255).astype(np.uint8)


def _files(source):
    """Yields (alphabet, character, file name, drawing) of one fake archive."""
    for (alphabet, character), count in FAKE[source].items():
        for drawer in range(1, count + 1):
            file_name = f"{KEYS.index((alphabet, character)) + 1:04d}_{drawer:02d}.png"
            yield alphabet, character, file_name, _drawing(alphabet, character, drawer)


def _write_archives(data_dir: pathlib.Path, how: dict[str, str]) -> pathlib.Path:
    """Writes archives: how[source] is "zip", "folder" (zip root inside) or "flat"."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for source, kind in how.items():
        name = ARCHIVE_OF[source]
        if kind == "zip":
            with zipfile.ZipFile(data_dir / f"{name}.zip", "w") as archive:
                for alphabet, character, file_name, drawing in _files(source):
                    png = tf.io.encode_png(drawing).numpy()
                    archive.writestr(f"{name}/{alphabet}/{character}/{file_name}", png)
        else:
            top = data_dir / name / name if kind == "folder" else data_dir / name
            for alphabet, character, file_name, drawing in _files(source):
                (top / alphabet / character).mkdir(parents=True, exist_ok=True)
                (top / alphabet / character / file_name).write_bytes(
                    tf.io.encode_png(drawing).numpy()
                )
    return data_dir


def _summary(records):
    return [(r.name, r.source, len(r.images)) for r in records]


def _expected_images(name: str, image_size: int) -> np.ndarray:
    """Preprocessed drawings of a character, sorted by bytes (order-free comparison)."""
    alphabet, character = name.split("/")
    count = next(
        FAKE[s][(alphabet, character)] for s in FAKE if (alphabet, character) in FAKE[s]
    )
    images = [
        preprocess_omniglot_image(_drawing(alphabet, character, d), image_size).numpy()
        for d in range(1, count + 1)
    ]
    return np.stack(sorted(images, key=lambda a: a.tobytes()))


# --- folder loader -----------------------------------------------------------------------


def test_folder_loader_zips_dedup_and_images(tmp_path):
    data_dir = _write_archives(tmp_path, {s: "zip" for s in FAKE})
    records = load_omniglot_folder(data_dir, image_size=14)
    assert _summary(records) == EXPECTED
    for record in records:
        assert (
            record.images.shape[1:] == (14, 14, 1) and record.images.dtype == np.float32
        )
        np.testing.assert_array_equal(record.images, _expected_images(record.name, 14))


def test_folder_loader_zipped_and_unpacked_give_identical_records(tmp_path):
    zipped = load_omniglot_folder(
        _write_archives(tmp_path / "z", {s: "zip" for s in FAKE}), 14
    )
    mixed = {
        "background": "folder",
        "evaluation": "flat",
        "small1": "zip",
        "small2": "folder",
    }
    unpacked = load_omniglot_folder(_write_archives(tmp_path / "u", mixed), 14)
    assert unpacked == zipped


def test_folder_loader_missing_or_empty_dir_names_path_and_expected_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere does not exist") as error:
        load_omniglot_folder(missing)
    assert "images_background.zip" in str(error.value)
    assert "images_background_small2.zip" in str(error.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no archive here")
    with pytest.raises(
        FileNotFoundError, match="empty holds none of images_background.zip"
    ):
        load_omniglot_folder(tmp_path / "empty")


def test_folder_loader_rejects_conflicting_duplicates_and_bad_layout(tmp_path):
    data_dir = _write_archives(tmp_path / "a", {"small1": "zip", "small2": "flat"})
    extra = (
        data_dir / "images_background_small2" / "Greek" / "character01" / "9999_09.png"
    )
    extra.write_bytes(tf.io.encode_png(_drawing("Greek", "character01", 9)).numpy())
    with pytest.raises(
        ValueError, match="Greek/character01 is in images_background_small2"
    ):
        load_omniglot_folder(data_dir)
    data_dir = _write_archives(tmp_path / "c", {"small2": "folder"})
    broken = data_dir / "images_background_small2" / "images_background_small2"
    (broken / "Latin" / "character03" / "0006_02.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="Cannot decode Latin/character03/0006_02.png"):
        load_omniglot_folder(data_dir)
    data_dir = _write_archives(tmp_path / "b", {"small1": "flat"})
    stray = data_dir / "images_background_small1" / "Greek" / "stray.png"
    stray.write_bytes(tf.io.encode_png(_drawing("Greek", "x", 1)).numpy())
    with pytest.raises(ValueError, match="stray.png: expected <Alphabet>/characterNN"):
        load_omniglot_folder(data_dir)


# --- tensorflow-datasets loader ----------------------------------------------------------

TFDS_SPLIT_OF = {
    "train": "background",
    "test": "evaluation",
    "small1": "small1",
    "small2": "small2",
}


def _fake_tfds_split(self, split, **kwargs):
    """Examples of a split as the omniglot builder stores them, in a shuffled order."""
    del kwargs
    # The real builder sets these names while preparing the data set.
    self.info.features["alphabet"].names = ALPHABETS
    examples = [
        {
            "image": np.repeat(drawing, 3, axis=-1),
            "alphabet": ALPHABETS.index(alphabet),
            "alphabet_char_id": int(character[len("character") :]) - 1,
            "label": KEYS.index((alphabet, character)),
        }
        for alphabet, character, _, drawing in _files(TFDS_SPLIT_OF[split])
    ]
    order = np.random.default_rng(len(split)).permutation(len(examples))
    columns = {k: np.stack([examples[i][k] for i in order]) for k in examples[0]}
    return tf.data.Dataset.from_tensor_slices(columns)


@contextlib.contextmanager
def _mock_tfds():
    # mock_data makes download_and_prepare a no-op, but the builder still
    # reports "not prepared": the loader would probe the download host first.
    with (
        tfds.testing.mock_data(
            policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=_fake_tfds_split
        ),
        mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True),
    ):
        yield


def test_tfds_loader_dedups_and_equals_folder_loader(tmp_path):
    folder_records = load_omniglot_folder(
        _write_archives(tmp_path, {s: "zip" for s in FAKE}), 14
    )
    with _mock_tfds():
        tfds_records = load_omniglot_tfds(
            data_dir=str(tmp_path / "tfds"), image_size=14
        )
    assert _summary(tfds_records) == EXPECTED
    assert tfds_records == folder_records


def test_tfds_loader_split_subset_keeps_first_source_in_archive_order(tmp_path):
    with _mock_tfds():
        records = load_omniglot_tfds(splits=("small2", "small1"), image_size=14)
    assert _summary(records) == [
        ("Alpha/character01", "small1", 3),
        ("Greek/character01", "small1", 2),
        ("Latin/character03", "small2", 4),
    ]
    with pytest.raises(ValueError, match=r"got \('train', 'validation'\)"):
        load_omniglot_tfds(splits=("train", "validation"))


def test_unreachable_download_host_fails_at_once_with_the_hint(tmp_path, monkeypatch):
    attempts = []

    def refuse(address, timeout):
        attempts.append((address, timeout))
        raise OSError("Name or service not known")

    for name in omniglot_module._PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(omniglot_module.socket, "create_connection", refuse)
    with pytest.raises(ConnectionError, match="cannot reach github.com") as error:
        load_omniglot_tfds(data_dir=str(tmp_path))
    assert attempts == [(("github.com", 443), 10.0)]
    assert "TFMETA_OMNIGLOT_DIR" in str(error.value)
    assert not list(tmp_path.iterdir())  # nothing downloaded or prepared
    # Behind a proxy a direct connection says nothing: no probe, the download runs.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    with (
        mock.patch.object(
            tfds.core.DatasetBuilder,
            "download_and_prepare",
            side_effect=RuntimeError("downloading through the proxy"),
        ),
        pytest.raises(RuntimeError, match="through the proxy"),
    ):
        load_omniglot_tfds(data_dir=str(tmp_path))
    assert len(attempts) == 1


def test_tfds_loader_errors_carry_offline_hint(tmp_path):
    # Nothing is prepared in tmp_path and download=False: tensorflow-datasets fails.
    with pytest.raises(Exception) as error:
        load_omniglot_tfds(data_dir=str(tmp_path), download=False)
    notes = "\n".join(getattr(error.value, "__notes__", []))
    assert "data_dir setting" in notes and "TFMETA_OMNIGLOT_DIR" in notes


# --- the real minimal sets ---------------------------------------------------------------


def _real_omniglot_dir() -> pathlib.Path:
    env = os.environ.get("TFMETA_OMNIGLOT_DIR")
    repo = pathlib.Path(__file__).resolve().parents[2]
    return pathlib.Path(env) if env else repo / ".." / "shared" / "data" / "omniglot"


@pytest.fixture(scope="module")
def real_characters(tmp_path_factory):
    source = _real_omniglot_dir()
    if not all((source / name).is_file() for name in MINIMAL_ZIPS):
        pytest.skip(
            f"Omniglot minimal sets {MINIMAL_ZIPS} not found in {source}; set "
            "TFMETA_OMNIGLOT_DIR to a folder holding them to run this test."
        )
    # Link only the minimal sets, so that a folder with the full archives gives the same.
    data_dir = tmp_path_factory.mktemp("omniglot")
    for name in MINIMAL_ZIPS:
        (data_dir / name).symlink_to((source / name).resolve())
    return load_omniglot_folder(data_dir)


def test_real_minimal_sets_have_242_distinct_characters(real_characters):
    assert len(real_characters) == 242
    sources = collections.Counter(r.source for r in real_characters)
    assert sources == {"small1": 136, "small2": 242 - 136}
    alphabets = collections.Counter(r.alphabet for r in real_characters)
    assert len(alphabets) == 8
    # Greek and Latin are in both zips but count once, from small1.
    assert alphabets["Greek"] == 24 and alphabets["Latin"] == 26
    assert {r.source for r in real_characters if r.alphabet in ("Greek", "Latin")} == {
        "small1"
    }
    names = [r.name for r in real_characters]
    assert names == sorted(names) and len(set(names)) == 242


def test_real_images_are_inverted_28x28_in_unit_range(real_characters):
    images = np.stack([r.images for r in real_characters])
    assert images.shape == (242, 20, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    # Strokes are 1 and paper 0: little ink, mostly exact zeros, every drawing has ink.
    assert 0.03 < images.mean() < 0.15
    assert (images == 0.0).mean() > 0.7
    assert images.reshape(242 * 20, -1).max(axis=1).min() > 0.5


def test_real_record_holds_the_preprocessed_zip_file(real_characters):
    with zipfile.ZipFile(_real_omniglot_dir() / MINIMAL_ZIPS[1]) as archive:
        png = archive.read(
            "images_background_small2/Tagalog/character05/"
            + _first_png(archive, "Tagalog/character05")
        )
    expected = preprocess_omniglot_image(png).numpy()
    record = next(r for r in real_characters if r.name == "Tagalog/character05")
    assert any(np.array_equal(image, expected) for image in record.images)


def _first_png(archive: zipfile.ZipFile, character: str) -> str:
    names = sorted(
        n for n in archive.namelist() if f"/{character}/" in n and n.endswith(".png")
    )
    return names[0].rsplit("/", 1)[1]
