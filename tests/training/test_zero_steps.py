"""A run of no meta-training step (num_steps=0): theta as built, e.g. a
pretrained backbone or a learner that is not meta-trained, is validated and
saved at step 0, so that evaluation, export and a longer rerun read it."""

import json

import numpy as np

from tests.training.runs import make_trainer, meta_test_episodes, snapshot, tensors
from tfmeta.training import Workdir, evaluate, restore_checkpoint


def values(trainer):
    return [v.numpy().copy() for v in trainer.learner.variables]


def test_zero_steps_validate_and_save_theta_at_step_0(tmp_path):
    lines = []
    trainer = make_trainer(tmp_path, lines=lines)
    built = values(trainer)
    summary = trainer.train(0)
    assert summary["step"] == 0 and trainer.step == 0
    assert lines[-1] == "num_steps 0: saved theta at step 0"
    run = Workdir(str(tmp_path))
    assert run.latest.steps() == [0] and run.best.steps() == [0]
    history = json.loads((tmp_path / "validation.json").read_text())
    assert [entry["step"] for entry in history] == [0]
    assert json.loads((tmp_path / "timing.json").read_text())["step"] == 0
    # The step-0 checkpoint holds theta as built, and so does the trainer.
    for before, after in zip(built, values(trainer), strict=True):
        np.testing.assert_array_equal(before, after)
    restored = make_trainer(tmp_path / "elsewhere", seed=7)  # another init
    path = restore_checkpoint(
        str(tmp_path), restored.learner, "best", print_fn=lambda line: None
    )
    assert path.endswith("ckpt-0")
    for before, after in zip(built, values(restored), strict=True):
        np.testing.assert_array_equal(before, after)
    # Its meta-test is the built learner's.
    assert evaluate(restored.learner, meta_test_episodes()) == evaluate(
        trainer.learner, meta_test_episodes()
    )


def test_a_rerun_of_zero_steps_changes_nothing(tmp_path):
    make_trainer(tmp_path).train(0)
    before = snapshot(tmp_path)
    lines = []
    make_trainer(tmp_path, seed=3, lines=lines).train(0)
    after = snapshot(tmp_path)
    before.pop("lock"), after.pop("lock")  # the holder's pid and host
    assert after == before
    assert lines[-1] == "already at step 0 >= num_steps 0; nothing to train"


def test_without_validation_only_the_latest_checkpoint_is_saved(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.val_episodes = None
    trainer.train(0)
    run = Workdir(str(tmp_path))
    assert run.latest.steps() == [0] and run.best.steps() == []
    assert not (tmp_path / "validation.json").exists()
    assert restore_checkpoint(
        str(tmp_path), make_trainer(tmp_path / "x").learner, "best", print_fn=print
    ).endswith("checkpoints/ckpt-0")


def test_a_longer_rerun_trains_from_the_step_0_checkpoint(tmp_path):
    make_trainer(tmp_path / "zero").train(0)
    continued = make_trainer(tmp_path / "zero", seed=5)  # a new process, another init
    continued.train(3)
    straight = make_trainer(tmp_path / "straight")
    straight.train(3)
    # The same meta-steps from the same theta and optimizer state, bit for
    # bit (the run states differ: one history has step 0 too).
    first, second = (
        tensors(Workdir(str(tmp_path / name)).latest.path(3))
        for name in ("zero", "straight")
    )
    theta = sorted(k for k in first if k.startswith(("model_variables", "optimizer")))
    assert theta == sorted(
        k for k in second if k.startswith(("model_variables", "optimizer"))
    )
    assert any(k.startswith("optimizer") for k in theta)
    for key in theta:
        assert np.array_equal(first[key], second[key]), key
    history = json.loads((tmp_path / "zero" / "validation.json").read_text())
    assert [entry["step"] for entry in history] == [0, 2, 3]
