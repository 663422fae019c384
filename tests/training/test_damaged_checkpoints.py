"""Damaged checkpoints: the run resumes from the newest intact one and says so;
a lost state file is rebuilt from the files; with none intact it refuses."""

import glob
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.training.runs import (
    NUM_STEPS,
    assert_same_run,
    make_learner,
    make_trainer,
    snapshot,
)
from tfmeta.training import CheckpointError, Workdir, restore_checkpoint

# One worker computes the finished run (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("damaged_checkpoints")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted run (latest checkpoints 4, 6, 8; best 2, 6, 8)."""
    workdir = tmp_path_factory.mktemp("finished")
    make_trainer(workdir).train(NUM_STEPS)
    assert Workdir(str(workdir)).latest.steps() == [8, 6, 4]
    assert Workdir(str(workdir)).best.steps() == [8, 6, 2]
    return workdir


def data_file(workdir, folder="checkpoints", step=8):
    (path,) = glob.glob(str(workdir / folder / f"ckpt-{step}.data-*"))
    return path


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)


def flip_byte(path, position=0.5):
    with open(path, "r+b") as f:
        size = f.seek(0, 2)
        f.seek(int(size * position))
        byte = f.read(1)
        f.seek(int(size * position))
        f.write(bytes([byte[0] ^ 0x20]))


DAMAGES = {
    "truncated data": lambda w: truncate(data_file(w)),
    "bit flip in data": lambda w: flip_byte(data_file(w)),
    "bit flip in index": lambda w: flip_byte(str(w / "checkpoints" / "ckpt-8.index")),
    "index lost": lambda w: (w / "checkpoints" / "ckpt-8.index").unlink(),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_latest_resumes_from_the_newest_intact(finished, tmp_path, damage):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    DAMAGES[damage](workdir)
    lines = []
    trainer = make_trainer(workdir, seed=5, lines=lines)
    assert trainer.resume() == 6
    assert any(
        line.startswith("skipping checkpoint") and "ckpt-8" in line for line in lines
    ), lines
    assert any("moved the damaged checkpoint" in line for line in lines), lines
    assert glob.glob(str(workdir / "checkpoints" / "damaged" / "ckpt-8.*"))
    # best/ 8 was written after the restored checkpoint: dropped, made again.
    assert Workdir(str(workdir)).best.steps() == [6, 2]
    trainer.train(NUM_STEPS)
    assert_same_run(finished, workdir)


@pytest.mark.parametrize("problem", ["missing", "garbled"])
def test_lost_state_file_is_rebuilt_from_the_checkpoint_files(
    finished, tmp_path, problem
):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    state = workdir / "checkpoints" / "checkpoint"
    if problem == "missing":
        state.unlink()
    else:
        state.write_text('model_checkpoint_path: "ckpt-8"\nall_model_checkp')
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")) is None
    lines = []
    trainer = make_trainer(workdir, seed=5, lines=lines)
    assert trainer.resume() == 8  # not a restart from step 0 over the checkpoints
    assert f"was {problem}: rebuilt from the checkpoint files" in "\n".join(lines)
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-8")
    trainer.train(NUM_STEPS + 2)
    assert trainer.step == NUM_STEPS + 2


def test_no_intact_checkpoint_is_refused_and_changes_nothing(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    for step in (4, 6, 8):
        flip_byte(data_file(workdir, step=step))
    before = snapshot(workdir)
    trainer = make_trainer(workdir, seed=5)
    with pytest.raises(CheckpointError) as error:
        trainer.train(NUM_STEPS + 2)
    message = str(error.value)
    assert all(f"ckpt-{step}: " in message for step in (4, 6, 8)), message
    assert "Checksum does not match" in message
    assert snapshot(workdir) == before


def test_best_without_latest_checkpoints_is_refused(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    shutil.rmtree(workdir / "checkpoints")
    with pytest.raises(CheckpointError, match="holds checkpoints but"):
        make_trainer(workdir).train(NUM_STEPS)
    assert not (workdir / "checkpoints").exists()


def test_evaluation_skips_a_damaged_best_for_the_previous_one(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    truncate(data_file(workdir, "best", 8))
    before = snapshot(workdir)
    lines = []
    learner = make_learner(seed=5)
    path = restore_checkpoint(str(workdir), learner, "best", print_fn=lines.append)
    assert path.endswith("best/ckpt-6") and "ckpt-8" in lines[0]
    expected = tf.train.load_checkpoint(str(finished / "best" / "ckpt-6"))
    np.testing.assert_array_equal(
        learner.model.variables[0].numpy(),
        expected.get_tensor("model_variables/0/.ATTRIBUTES/VARIABLE_VALUE"),
    )
    assert snapshot(workdir) == before  # reading a checkpoint writes nothing
