"""A disk that fills while an export is written: one line naming the model
folder and the space needed, and no version (complete or partial) left."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from experiments.export import export_workdir
from tests.export import trained_exports
from tfmeta.errors import DiskFullError

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")


def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_version(
    tmp_path, tmp_path_factory, monkeypatch
):
    root = tmp_path_factory.getbasetemp() / "trained_exports"
    exported = trained_exports(root)["maml"]
    save = tf.saved_model.save

    def full_disk_save(module, folder, signatures=None, options=None):
        # A partial version, then the disk is full.
        save(module, folder, signatures=signatures, options=options)
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{folder}/saved_model.pb.tmp; No space left on device"
        )

    monkeypatch.setattr(tf.saved_model, "save", full_disk_save)
    export_dir = tmp_path / "models" / "omniglot"
    with pytest.raises(DiskFullError) as raised:
        export_workdir(str(exported.workdir), str(export_dir))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"no space left on the disk of {export_dir} to write")
    assert "it needs more than" in message and "MiB free" in message
    assert os.listdir(export_dir) == []  # neither a version nor the temporary folder
