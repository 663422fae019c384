"""A disk that fills while a checkpoint is written: one line naming the
folder and the space needed, no partial checkpoint left, and the rerun
resumes to the same run as one that never stopped."""

from __future__ import annotations

import os

import pytest
import tensorflow as tf

from tests.training.runs import NUM_STEPS, assert_same_run, make_trainer
from tfmeta.training import CheckpointError
from tfmeta.training.checkpoints import DiskFullError, checkpoint_bytes


def fill_disk_at(folder: str, step: int, monkeypatch) -> list[str]:
    """Makes the next write of checkpoint ``step`` into ``folder`` leave a
    partial data file and fail as TensorFlow does on a full disk."""
    write = tf.train.Checkpoint.write
    failed: list[str] = []

    def full_disk_write(self, file_prefix, options=None):
        if not failed and file_prefix == os.path.join(folder, f"ckpt-{step}"):
            failed.append(file_prefix)
            os.makedirs(folder, exist_ok=True)
            with open(file_prefix + ".data-00000-of-00001", "wb") as partial:
                partial.write(b"\0" * 100)
            raise tf.errors.ResourceExhaustedError(
                None,
                None,
                f"{file_prefix}_temp/part-00000-of-00001.data-00000-of-00001; "
                "No space left on device",
            )
        return write(self, file_prefix, options)

    monkeypatch.setattr(tf.train.Checkpoint, "write", full_disk_write)
    return failed


def test_a_full_disk_while_saving_best_is_one_line_and_the_rerun_recovers(
    tmp_path, monkeypatch
):
    reference = tmp_path / "reference"
    make_trainer(reference).train(NUM_STEPS)

    workdir = tmp_path / "run"
    best = os.path.join(str(workdir), "best")
    failed = fill_disk_at(best, 2, monkeypatch)
    trainer = make_trainer(workdir)
    with pytest.raises(DiskFullError) as raised:
        trainer.train(NUM_STEPS)
    assert failed, "the full disk was never reached"
    message = str(raised.value)
    assert "\n" not in message
    assert f"no space left on the disk of {best}" in message
    assert "checkpoint of step 2" in message
    needed = checkpoint_bytes(trainer.checkpoint) / 2**20
    assert f"needs about {needed:.1f} MiB" in message
    assert isinstance(raised.value, CheckpointError)  # the binaries' one-line path
    assert not [n for n in os.listdir(best) if n.startswith("ckpt-2")]
    assert os.path.exists(os.path.join(str(workdir), "checkpoints", "ckpt-2.index"))

    monkeypatch.undo()  # space freed: the same command again
    make_trainer(workdir).train(NUM_STEPS)
    assert_same_run(reference, workdir)


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    def broken_write(self, file_prefix, options=None):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(tf.train.Checkpoint, "write", broken_write)
    with pytest.raises(tf.errors.ResourceExhaustedError, match="OOM"):
        make_trainer(tmp_path / "run").train(NUM_STEPS)
