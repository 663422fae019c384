"""Versions in the TF Serving layout: numbered, never overwritten, never partial; models.config."""

from __future__ import annotations

import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from google.protobuf import text_format

from experiments.export import export_workdir
from tests.export import trained_exports
from tests.helpers import REPO
from tfmeta.export import (
    ModelsConfigError,
    existing_versions,
    layout,
    models_config,
    next_version,
    read_models_config,
    write_models_config,
    write_version,
)

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")

SERVING_CONFIG = "tensorflow_serving.config.model_server_config_pb2"
try:  # imported before any test makes it unimportable
    config_pb2 = importlib.import_module(SERVING_CONFIG)
except ImportError:  # the serving extra is not installed
    config_pb2 = None
needs_serving = pytest.mark.skipif(
    config_pb2 is None, reason="tensorflow-serving-api not installed"
)


def _write_file(name: str, text: str = "x"):
    def write(folder):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)

    return write


def test_versions_count_up_from_the_highest_and_ignore_other_folders(tmp_path):
    assert (
        existing_versions(str(tmp_path / "absent")) == []
        and next_version(str(tmp_path)) == 1
    )
    for name in ("1", "3", "tmp", ".export-tmp-x"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a version")
    assert existing_versions(str(tmp_path)) == [1, 3]
    version, path = write_version(str(tmp_path), _write_file("saved_model.pb"))
    assert (version, path) == (4, str(tmp_path / "4"))
    assert (tmp_path / "4" / "saved_model.pb").read_text() == "x"
    assert (tmp_path / "1").is_dir() and not list((tmp_path / "1").iterdir())


def test_a_version_taken_meanwhile_is_not_overwritten(tmp_path):
    (tmp_path / "1").mkdir()

    def write_while_another_export_finishes(folder):
        _write_file("mine")(folder)
        (tmp_path / "2").mkdir()
        (tmp_path / "2" / "theirs").write_text("y")

    version, _ = write_version(str(tmp_path), write_while_another_export_finishes)
    assert version == 3
    assert os.listdir(tmp_path / "2") == ["theirs"] and os.listdir(tmp_path / "3") == [
        "mine"
    ]


def test_a_failing_write_leaves_no_folder(tmp_path):
    (tmp_path / "1").mkdir()

    def write_half_then_fail(folder):
        _write_file("variables.index")(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_version(str(tmp_path), write_half_then_fail)
    assert sorted(os.listdir(tmp_path)) == ["1"]


@pytest.fixture(params=["protobuf", "plain"])
def models_config_path(request, monkeypatch, tmp_path):
    """A models.config path, with TF Serving's protobuf ("protobuf") or with it
    made unimportable ("plain": the serving extra not installed)."""
    if request.param == "protobuf":
        if config_pb2 is None:
            pytest.skip("tensorflow-serving-api not installed")
    else:
        monkeypatch.setitem(sys.modules, SERVING_CONFIG, None)
        assert models_config._protobuf() is None
    return str(tmp_path / "models.config")


def test_models_config_adds_and_updates_models_and_keeps_the_others(
    models_config_path,
):
    path = models_config_path
    write_models_config(path, "maml", "/models/maml")
    text = write_models_config(path, "reptile", "C:\\models\\reptile")
    assert text == (  # the same text from the protobuf and the plain writer
        "model_config_list {\n"
        '  config {\n    name: "maml"\n    base_path: "/models/maml"\n    model_platform: "tensorflow"\n  }\n'
        '  config {\n    name: "reptile"\n    base_path: "C:\\\\models\\\\reptile"\n'
        '    model_platform: "tensorflow"\n  }\n'
        "}\n"
    )
    write_models_config(path, "maml", "/srv/models/maml")
    assert read_models_config(path) == [
        {
            "name": "maml",
            "base_path": "/srv/models/maml",
            "model_platform": "tensorflow",
        },
        {
            "name": "reptile",
            "base_path": "C:\\models\\reptile",
            "model_platform": "tensorflow",
        },
    ]
    with pytest.raises(ValueError, match="model name must be non-empty"):
        write_models_config(path, 'a"b', "/models/x")


HAND_WRITTEN = (
    "# served by the team's server\n"
    'model_config_list: { config { name: "m" base_path: "/models/m" model_platform: "tensorflow" '
    "model_version_policy { all {} } } }\n"
)


@needs_serving
def test_models_config_keeps_hand_written_settings_with_the_protobuf(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(HAND_WRITTEN)
    text = write_models_config(str(path), "other", "/models/other")
    parsed = text_format.Parse(text, config_pb2.ModelServerConfig())
    first, second = parsed.model_config_list.config
    assert (first.name, first.model_version_policy.WhichOneof("policy_choice")) == (
        "m",
        "all",
    )
    assert (second.name, second.base_path) == ("other", "/models/other")


def test_models_config_with_other_settings_is_refused_without_the_protobuf(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(sys.modules, SERVING_CONFIG, None)
    path = tmp_path / "models.config"
    path.write_text(HAND_WRITTEN)
    with pytest.raises(ModelsConfigError) as error:
        write_models_config(str(path), "other", "/models/other")
    assert str(path) in str(error.value)
    assert "without tensorflow-serving-api" in str(error.value)
    assert "tfmeta[serving]" in str(error.value)
    assert path.read_text() == HAND_WRITTEN
    # Comments, colons and spacing are no obstacle where only the three fields are set.
    path.write_text('# mine\nmodel_config_list: {config {name:"m" base_path: "/m"}}')
    assert read_models_config(str(path)) == [
        {"name": "m", "base_path": "/m", "model_platform": ""}
    ]


@pytest.mark.parametrize(
    "garbled",
    [
        'model_config_list { config { name: "m" ',  # cut short
        'model_config_list { config { name: "m" base_path: /models/m } }',  # no quotes
        "model_config_list { config { nmae: 'm' } }",  # misspelt field
        "<?xml version='1.0'?><models/>",  # another format
        b"\x89PNG\r\n\x1a\n\xff\xfe",  # not text
    ],
)
def test_a_garbled_models_config_is_one_error_naming_the_file(
    models_config_path, garbled
):
    path = pathlib.Path(models_config_path)
    if isinstance(garbled, bytes):
        path.write_bytes(garbled)
    else:
        path.write_text(garbled)
    before = path.read_bytes()
    for call in (
        lambda: read_models_config(str(path)),
        lambda: write_models_config(str(path), "other", "/models/other"),
    ):
        with pytest.raises(ModelsConfigError, match=re.escape(str(path))):
            call()
    assert path.read_bytes() == before


@needs_serving
def test_a_custom_model_config_is_refused(tmp_path):
    path = tmp_path / "models.config"
    path.write_text('custom_model_config { type_url: "x" }\n')
    with pytest.raises(ModelsConfigError, match="custom_model_config"):
        write_models_config(str(path), "other", "/models/other")


@pytest.fixture(scope="module")
def sinusoid_workdir(tmp_path_factory):
    return str(
        trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")[
            "sinusoid"
        ].workdir
    )


def test_exporting_twice_gives_two_versions_and_an_interrupted_export_none(
    sinusoid_workdir, tmp_path, monkeypatch
):
    export_dir = tmp_path / "models" / "sine"
    first = export_workdir(sinusoid_workdir, str(export_dir), base_path="/models/sine")
    second = export_workdir(sinusoid_workdir, str(export_dir), which="latest")
    assert (first["version"], second["version"]) == (1, 2)
    assert existing_versions(str(export_dir)) == [1, 2]
    assert first["checkpoint"].startswith(os.path.join(sinusoid_workdir, "best"))
    assert second["checkpoint"].startswith(
        os.path.join(sinusoid_workdir, "checkpoints")
    )
    # The second export (default base path) replaced the first's entry.
    assert read_models_config(str(tmp_path / "models" / "models.config")) == [
        {"name": "sine", "base_path": str(export_dir), "model_platform": "tensorflow"}
    ]

    real_save = tf.saved_model.save

    def save_then_crash(module, folder, signatures=None, options=None):
        real_save(module, folder, signatures=signatures, options=options)
        assert os.path.basename(folder).startswith(layout.TEMPORARY_PREFIX)
        raise KeyboardInterrupt("interrupted after the variables were written")

    monkeypatch.setattr(tf.saved_model, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        export_workdir(sinusoid_workdir, str(export_dir))
    assert sorted(os.listdir(export_dir)) == ["1", "2"]
    monkeypatch.undo()
    assert export_workdir(sinusoid_workdir, str(export_dir))["version"] == 3


def test_export_binary_writes_a_version_and_the_model_config(
    sinusoid_workdir, tmp_path
):
    command = [
        sys.executable,
        "-m",
        "experiments.export",
        f"--workdir={sinusoid_workdir}",
        f"--export_dir={tmp_path / 'models' / 'sine'}",
        "--base_path=/models/sine",
        "--checkpoint=latest",
    ]
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"to {tmp_path / 'models' / 'sine' / '1'} (version 1)" in done.stdout
    assert "10 inner steps, alpha 0.01; adapts all; transductive=False" in done.stdout
    assert (
        read_models_config(str(tmp_path / "models" / "models.config"))[0]["base_path"]
        == "/models/sine"
    )
    assert (tmp_path / "models" / "sine" / "1" / "saved_model.pb").is_file()
    with pytest.raises(FileNotFoundError, match="no config.json in workdir"):
        export_workdir(str(tmp_path / "nowhere"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


@needs_serving
def test_models_config_parses_as_tf_servings_model_server_config(
    models_config_path,
):
    # Written with the protobuf or by the plain writer, TF Serving's message reads it.
    path = models_config_path
    write_models_config(path, "maml", "/models/maml")
    text = write_models_config(path, "reptile", "/models/reptile")
    parsed = text_format.Parse(text, config_pb2.ModelServerConfig())
    assert [
        (c.name, c.base_path, c.model_platform) for c in parsed.model_config_list.config
    ] == [
        ("maml", "/models/maml", "tensorflow"),
        ("reptile", "/models/reptile", "tensorflow"),
    ]
