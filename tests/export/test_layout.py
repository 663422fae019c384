"""Versions in the TF Serving layout: numbered, never overwritten, never partial; models.config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from experiments.export import export_workdir
from tests.export import trained_exports
from tests.helpers import REPO
from tfmeta.export import (
    existing_versions,
    layout,
    next_version,
    read_models_config,
    write_models_config,
    write_version,
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


def test_models_config_adds_and_updates_models_and_keeps_the_others(tmp_path):
    path = str(tmp_path / "models.config")
    write_models_config(path, "maml", "/models/maml")
    text = write_models_config(path, "reptile", "/models/reptile")
    assert text == (
        "model_config_list {\n"
        '  config {\n    name: "maml"\n    base_path: "/models/maml"\n    model_platform: "tensorflow"\n  }\n'
        '  config {\n    name: "reptile"\n    base_path: "/models/reptile"\n'
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
            "base_path": "/models/reptile",
            "model_platform": "tensorflow",
        },
    ]
    with pytest.raises(ValueError, match="model name must be non-empty"):
        write_models_config(path, 'a"b', "/models/x")


def test_models_config_with_other_settings_is_not_overwritten(tmp_path):
    path = tmp_path / "models.config"
    hand_written = (
        'model_config_list { config { name: "m" base_path: "/models/m" model_platform: "tensorflow" '
        "model_version_policy { all {} } } }\n"
    )
    path.write_text(hand_written)
    with pytest.raises(ValueError, match="not a models.config written by tfmeta"):
        write_models_config(str(path), "other", "/models/other")
    assert path.read_text() == hand_written


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
    assert "10 inner steps, alpha 0.01, transductive=False" in done.stdout
    assert (
        read_models_config(str(tmp_path / "models" / "models.config"))[0]["base_path"]
        == "/models/sine"
    )
    assert (tmp_path / "models" / "sine" / "1" / "saved_model.pb").is_file()
    with pytest.raises(FileNotFoundError, match="no config.json in workdir"):
        export_workdir(str(tmp_path / "nowhere"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_models_config_parses_as_tf_servings_model_server_config(tmp_path):
    config_pb2 = pytest.importorskip(
        "tensorflow_serving.config.model_server_config_pb2",
        reason="tensorflow-serving-api not installed",
    )
    from google.protobuf import text_format

    path = str(tmp_path / "models.config")
    write_models_config(path, "maml", "/models/maml")
    text = write_models_config(path, "reptile", "/models/reptile")
    parsed = text_format.Parse(text, config_pb2.ModelServerConfig())
    assert [
        (c.name, c.base_path, c.model_platform) for c in parsed.model_config_list.config
    ] == [
        ("maml", "/models/maml", "tensorflow"),
        ("reptile", "/models/reptile", "tensorflow"),
    ]
