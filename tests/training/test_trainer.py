"""Trainer: resume gives the uninterrupted result, NaN keeps the last good checkpoint."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import tiny_mlp
from tfmeta.algorithms import MAML
from tfmeta.data import sinusoid_dataset
from tfmeta.training import (
    NonFiniteLossError,
    Trainer,
    check_resume,
    evaluate,
    format_result,
    mean_confidence_interval,
    resume_differences,
)


def make_trainer(workdir, seed=0, episodes=None, **kwargs):
    learner = MAML(
        tiny_mlp(seed=seed, hidden=(16, 16)),
        keras.optimizers.Adam(1e-2),
        inner_lr=0.01,
        problem="regression",
        eval_inner_steps=1,
    )
    episodes = episodes or (
        lambda start: sinusoid_dataset(5, 5, 4, seed=1, start_episode=start)
    )
    val = lambda: sinusoid_dataset(5, 20, 10, seed=99, num_episodes=2)
    quiet = lambda line: None
    return Trainer(learner, str(workdir), episodes, val, print_fn=quiet, **kwargs)


def values(trainer):
    return [v.numpy().copy() for v in trainer.learner.variables]


def test_resume_equals_uninterrupted_run(tmp_path):
    straight = make_trainer(tmp_path / "a", checkpoint_every=3, eval_every=3)
    straight.train(6)
    first = make_trainer(tmp_path / "b", checkpoint_every=3, eval_every=3)
    first.train(3)
    # a new process would build everything afresh, with another init
    resumed = make_trainer(tmp_path / "b", seed=5, checkpoint_every=3, eval_every=3)
    resumed.train(6)
    assert resumed.step == 6
    for a, b in zip(values(straight), values(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    history = json.loads((tmp_path / "b" / "validation.json").read_text())
    assert [entry["step"] for entry in history] == [3, 6]
    timing = json.loads((tmp_path / "b" / "timing.json").read_text())
    assert timing["step"] == 6 and timing["train_seconds"] > 0


def test_a_crash_during_a_meta_validation_resumes_before_it(tmp_path):
    interrupted = make_trainer(tmp_path, checkpoint_every=2, eval_every=2)

    def killed():
        raise KeyboardInterrupt

    interrupted.val_episodes = killed  # stopped in the step-2 meta-validation
    with pytest.raises(KeyboardInterrupt):
        interrupted.train(2)
    # The checkpoint of a validation step is saved after the validation.
    assert not (tmp_path / "checkpoints").exists()
    assert not (tmp_path / "validation.json").exists()
    assert not (tmp_path / "best").exists()
    resumed = make_trainer(tmp_path, checkpoint_every=2, eval_every=2)
    resumed.train(2)
    history = json.loads((tmp_path / "validation.json").read_text())
    assert [entry["step"] for entry in history] == [2]
    assert resumed.restore("best").endswith("ckpt-2")
    resumed.train(2)  # nothing missing: no second validation
    history = json.loads((tmp_path / "validation.json").read_text())
    assert [entry["step"] for entry in history] == [2]


def test_best_checkpoint_is_kept_and_restorable(tmp_path):
    trainer = make_trainer(tmp_path, checkpoint_every=2, eval_every=2)
    trainer.train(6)
    history = json.loads((tmp_path / "validation.json").read_text())
    best = min(history, key=lambda entry: entry["mean"])
    assert trainer.workdir.best.steps()[0] == best["step"]
    assert trainer.state.best == (pytest.approx(best["mean"]), best["step"])
    trainer.restore("best")
    again = evaluate(trainer.learner, trainer.val_episodes())
    assert again["mean"] == pytest.approx(best["mean"], rel=1e-5)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def episodes(start):
        good = sinusoid_dataset(5, 5, 4, seed=1, start_episode=start).take(4)
        poisoned = good.map(lambda e: type(e)(*[x * np.nan for x in e]))
        return good.concatenate(poisoned)

    trainer = make_trainer(
        tmp_path, episodes=episodes, checkpoint_every=2, eval_every=100
    )
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        trainer.train(10)
    assert trainer.workdir.latest.steps()[0] == 4
    fresh = make_trainer(tmp_path, seed=3)
    fresh.restore()
    assert fresh.step == 4
    assert all(np.isfinite(v).all() for v in values(fresh))


def test_resume_refuses_every_changed_setting_but_the_allowed_ones():
    stored = {"n_way": 5, "seed": 0, "num_steps": 10, "hidden": [40, 40]}
    check_resume(stored, {**stored, "num_steps": 20}, may_change=["num_steps"])
    check_resume(stored, {**stored, "hidden": (40, 40)}, may_change=[])
    with pytest.raises(ValueError) as error:
        check_resume(
            stored, {**stored, "n_way": 20, "seed": 1}, may_change=["num_steps"]
        )
    assert "n_way: stored 5, requested 20; seed: stored 0, requested 1" in str(
        error.value
    )
    assert "--" not in str(error.value)  # a library message names no flag
    assert (
        resume_differences(
            {"gone": 1}, {"n_way": 5}, may_change=[], defaults={"n_way": 5}
        )
        == []
    )


def test_setting_missing_from_an_older_run_counts_as_its_default():
    check_resume(
        {"n_way": 5},
        {"n_way": 5, "noise": 0.0},
        may_change=[],
        defaults={"noise": 0.0},
    )
    with pytest.raises(ValueError, match="noise: stored 0.0, requested 0.3"):
        check_resume(
            {"n_way": 5},
            {"n_way": 5, "noise": 0.3},
            may_change=[],
            defaults={"noise": 0.0},
        )


def test_confidence_interval_formula():
    values_ = np.array([0.2, 0.4, 0.6, 0.8])
    mean, ci = mean_confidence_interval(values_)
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(1.96 * np.std(values_, ddof=1) / 2)


class FixedMetric:
    """A learner whose every task's metric (and loss) is given by the episode."""

    eval_inner_steps = 1

    def __init__(self, metric_name: str):
        self.metric_name = metric_name

    def meta_eval_step(self, episode, inner_steps):
        return {self.metric_name: tf.constant(episode), "loss": tf.constant(episode)}


def test_evaluation_reports_median_and_diverged_tasks():
    result = evaluate(FixedMetric("mse"), [[0.1, 0.3, np.nan], [0.2, 5.0]])
    assert result["num_tasks"] == 5 and result["nonfinite_tasks"] == 1
    assert np.isnan(result["mean"])
    assert result["median"] == pytest.approx(0.25)
    line = format_result(result)
    assert "median 0.2500" in line and "1 task(s) diverged" in line


def test_evaluation_reports_each_groups_figure_beside_the_whole():
    tasks = [[1.0, 0.5, 0.0], [0.5, 1.0]]
    groups = ["Greek", "Latin", "Greek", "Latin", "Greek"]
    result = evaluate(FixedMetric("accuracy"), tasks, task_groups=groups)
    assert list(result["by_group"]) == ["Greek", "Latin"]
    greek, latin = result["by_group"].values()
    assert (greek["mean"], greek["num_tasks"]) == (pytest.approx(2 / 3), 3)
    assert greek["ci95"] == pytest.approx(mean_confidence_interval([1, 0, 1])[1])
    assert (latin["mean"], latin["num_tasks"]) == (pytest.approx(0.5), 2)
    assert result["mean"] == pytest.approx(0.6)  # the whole is unchanged
    assert format_result(result) == (
        "accuracy 60.00% +- 36.67% (95% CI, 5 tasks); Greek 66.67% +- 65.33% "
        "(3 tasks); Latin 50.00% +- 0.00% (2 tasks)"
    )
    with pytest.raises(ValueError, match="^4 task groups for 5 tasks$"):
        evaluate(FixedMetric("accuracy"), tasks, task_groups=groups[:4])


def test_short_sinusoid_training_lowers_post_adaptation_mse(tmp_path):
    tf.random.set_seed(0)
    trainer = make_trainer(tmp_path, checkpoint_every=10_000, eval_every=10_000)
    test = lambda: sinusoid_dataset(10, 50, 25, seed=7, num_episodes=4)
    before = evaluate(trainer.learner, test(), inner_steps=5)["mean"]
    trainer.train(1500)
    after = evaluate(trainer.learner, test(), inner_steps=5)["mean"]
    assert after < 0.4 * before, (before, after)
