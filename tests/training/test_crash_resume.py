"""A crash at any save or validation point, then resume, equals an uninterrupted run.

Fixed fault-injection points (the trainer's ``events`` hook raises), not
random kills: each case stops a run there, resumes it with a fresh learner
(another init, as a new process) and compares the workdir bit for bit with an
uninterrupted run's.
"""

import json

import pytest
import tensorflow as tf

from tests.training.runs import (
    NUM_STEPS,
    Crash,
    assert_same_run,
    crash_at,
    make_trainer,
)
from tfmeta.training import Workdir

# One worker computes the uninterrupted run (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("crash_resume")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    events = []
    make_trainer(workdir, events=lambda *event: events.append(event)).train(NUM_STEPS)
    history = json.loads((workdir / "validation.json").read_text())
    # The case that needs the run state: a validation worse than an earlier
    # best (a stale best value would make it the best).
    assert [entry["best"] for entry in history] == [True, False, True, True]
    return workdir, events


# Every kind of point: before any checkpoint; after a best validation, before
# its checkpoint (the stale best value); after the latest checkpoint, before
# best/; after best/, before validation.json and timing.json; after a
# checkpoint-only save; between checkpoints; after a worse validation; the
# last step's validation and save.
CRASH_POINTS = [
    ("trained", 1),
    ("validated", 2),
    ("saved", 2),
    ("best_saved", 2),
    ("saved", 3),
    ("validated", 4),
    ("trained", 5),
    ("validated", 8),
    ("saved", 8),
]


@pytest.mark.parametrize("event,step", CRASH_POINTS)
def test_crash_then_resume_equals_the_uninterrupted_run(
    uninterrupted, tmp_path, event, step
):
    straight, events = uninterrupted
    assert (event, step) in events
    with pytest.raises(Crash):
        make_trainer(tmp_path, events=crash_at(event, step)).train(NUM_STEPS)
    lines = []
    # A new process builds the same init; another one checks that the
    # checkpoint restores everything (when there is one).
    seed = 5 if Workdir(str(tmp_path)).latest.steps() else 0
    resumed = make_trainer(tmp_path, seed=seed, lines=lines)
    resumed.train(NUM_STEPS)
    assert resumed.step == NUM_STEPS
    assert_same_run(straight, tmp_path)
    if (event, step) == ("saved", 2):
        assert any("saved the best checkpoint of step 2" in line for line in lines)


def test_training_time_is_restored_from_the_checkpoint(tmp_path):
    with pytest.raises(Crash):
        make_trainer(tmp_path, events=crash_at("trained", 5)).train(NUM_STEPS)
    saved = tf.train.load_checkpoint(str(tmp_path / "checkpoints" / "ckpt-4"))
    seconds = float(saved.get_tensor("train_seconds/.ATTRIBUTES/VARIABLE_VALUE"))
    assert seconds > 0
    (tmp_path / "timing.json").unlink()  # the view is rebuilt from the checkpoint
    resumed = make_trainer(tmp_path, seed=5)
    assert resumed.resume() == 4
    assert float(resumed.state.train_seconds.numpy()) == seconds
    timing = Workdir(str(tmp_path)).read_timing()
    assert timing == {"step": 4, "train_seconds": round(seconds, 1)}
    summary = resumed.train(NUM_STEPS)
    assert summary["train_seconds"] > seconds
    assert Workdir(str(tmp_path)).read_timing()["train_seconds"] > seconds
