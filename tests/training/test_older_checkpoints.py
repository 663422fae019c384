"""Runs saved before the run state was checkpointed still resume, and equal new runs."""

import json
import math

import pytest
import tensorflow as tf

from tests.training.runs import (
    NUM_STEPS,
    assert_same_checkpoint,
    make_learner,
    make_trainer,
    meta_test,
    train_episodes,
    val_episodes,
)
from tfmeta.training import Workdir, evaluate, write_json

# One worker computes the new run (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("older_checkpoints")


def write_older_run(workdir, steps, validate_last=True):
    """A run as the previous trainer wrote it: best_value (saved before the
    step's validation, so stale) was its only state; the checkpoints came from
    CheckpointManager; the history and timing were only in JSON files."""
    learner = make_learner()
    best_value = tf.Variable(math.inf, dtype=tf.float64)
    root = tf.train.Checkpoint(
        model_variables=[v.value for v in learner.model.variables],
        optimizer=learner.outer_optimizer,
        best_value=best_value,
    )
    latest = tf.train.CheckpointManager(root, str(workdir / "checkpoints"), 3)
    best = tf.train.CheckpointManager(root, str(workdir / "best"), 1)
    episodes, history = iter(train_episodes(0)), []
    for done in range(1, steps + 1):
        learner.meta_train_step(next(episodes))
        if done % 3 == 0 or done == steps:
            latest.save(checkpoint_number=done)
        if (done % 2 == 0 or done == steps) and (validate_last or done < steps):
            result = {**evaluate(learner, val_episodes()), "step": done}
            improved = result["mean"] < best_value.numpy()
            if improved:
                best_value.assign(result["mean"])
                best.save(checkpoint_number=done)
            history.append({**result, "best": bool(improved)})
            write_json(str(workdir / "validation.json"), history)
    write_json(str(workdir / "timing.json"), {"step": steps, "train_seconds": 1.5})


@pytest.fixture(scope="module")
def new_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("new")
    make_trainer(workdir).train(NUM_STEPS)
    return workdir


@pytest.mark.parametrize("validate_last", [True, False])
def test_an_older_run_resumes_and_equals_a_new_run(new_run, tmp_path, validate_last):
    # validate_last=False: stopped between the step-4 checkpoint and its validation.
    write_older_run(tmp_path, 4, validate_last)
    lines = []
    trainer = make_trainer(tmp_path, seed=5, lines=lines)
    assert trainer.resume() == 4
    assert any("predates the saved run state" in line for line in lines)
    # The best is the history's (step 2), not the stale checkpointed value.
    best_value, best_step = trainer.state.best
    assert best_step == 2 and math.isfinite(best_value)
    assert float(trainer.state.train_seconds.numpy()) == 1.5
    trainer.train(NUM_STEPS)
    for folder in ("checkpoints", "best"):
        for step in (6, 8):
            assert_same_checkpoint(
                str(new_run / folder / f"ckpt-{step}"),
                str(tmp_path / folder / f"ckpt-{step}"),
            )
    history = [
        json.loads((w / "validation.json").read_text()) for w in (new_run, tmp_path)
    ]
    assert history[0] == history[1]
    assert Workdir(str(tmp_path)).best.steps() == [8, 6, 2]
    assert meta_test(new_run) == meta_test(tmp_path)
