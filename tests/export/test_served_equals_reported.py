"""What is reported is what is served: the meta-test's per-query predictions
behind the reported accuracy equal the exported model's answers to the same
tasks, and the reported mode is the served one (transductive beside it)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from experiments.evaluate import PREDICTIONS_FILE, evaluate_workdir
from tests.export import trained_exports
from tfmeta.data.tasks import task_sets

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")

TEST_TASKS = 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")


@pytest.fixture(scope="module")
def maml(runs):
    return runs["maml"]


def test_exported_answers_equal_the_reported_predictions(maml, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(maml.workdir, workdir)
    config = {**maml.config, "test_tasks": TEST_TASKS}
    assert config["transductive"] is False  # the default trains as served
    results = evaluate_workdir(str(workdir), config=config)
    served = results["evaluations"][0]
    assert served["normalization"] == "the support set's statistics"
    beside = results["transductive_evaluations"][0]
    assert beside["normalization"] == "each query batch's own statistics"
    assert served["num_tasks"] == beside["num_tasks"] == TEST_TASKS
    # The validation pass answers as served: the figure training recorded for
    # the restored (best) checkpoint.
    history = json.loads((workdir / "validation.json").read_text())
    best = [entry for entry in history if entry["step"] == results["checkpoint_step"]]
    validation = results["validation"]
    assert validation["num_tasks"] == config["val_tasks"] == best[0]["num_tasks"]
    assert validation["mean"] == pytest.approx(best[0]["mean"], abs=1e-6)

    stored = np.load(workdir / PREDICTIONS_FILE)
    outputs, labels = stored["outputs"], stored["labels"]
    assert outputs.shape[:2] == labels.shape == (TEST_TASKS, 3 * config["eval_q_query"])
    # The reported accuracy is the stored predictions' accuracy.
    per_task = (outputs.argmax(-1) == labels).mean(axis=1)
    assert per_task.mean() == pytest.approx(served["mean"], abs=1e-6)

    module = tf.saved_model.load(str(maml.path))
    serve = module.signatures["adapt_and_predict"]
    data = task_sets(config)
    task = 0
    compared = 0
    for support_x, support_y, query_x, _ in data.test():
        for i in range(support_x.shape[0]):
            answer = serve(
                support_x=support_x[i], support_y=support_y[i], query_x=query_x[i]
            )["logits"].numpy()
            expected = outputs[task]
            np.testing.assert_allclose(answer, expected, rtol=1e-4, atol=1e-4)
            # Per query: the same class, ties aside.
            top = np.sort(expected, axis=-1)
            clear = top[:, -1] - top[:, -2] > 1e-4
            assert (answer.argmax(-1)[clear] == expected.argmax(-1)[clear]).all()
            compared += int(clear.sum())
            task += 1
    assert task == TEST_TASKS and compared > TEST_TASKS


def assert_served_as_reported(path, config, outputs):
    """The export at ``path`` answers the first batch of ``config``'s test
    tasks with the reported ``outputs``."""
    serve = tf.saved_model.load(path).signatures["adapt_and_predict"]
    support_x, support_y, query_x, _ = next(iter(task_sets(config).test()))
    for i in range(support_x.shape[0]):
        answer = serve(
            support_x=support_x[i], support_y=support_y[i], query_x=query_x[i]
        )["logits"].numpy()
        np.testing.assert_allclose(answer, outputs[i], rtol=1e-4, atol=1e-4)


def test_copies_are_served_as_reported(maml, tmp_path):
    """Support and query copies set for a trained run: evaluation reports it, the
    export given the same serves the very predictions, and they differ from
    the run's own (no copies)."""
    from experiments.export import export_workdir

    workdir = tmp_path / "run"
    shutil.copytree(maml.workdir, workdir)
    settings = {
        "support_copies": 2,
        "support_augment": 1.5,
        "query_copies": 2,
        "query_augment": 1.0,
    }
    config = {**maml.config, "test_tasks": 4, **settings}
    plain = evaluate_workdir(str(workdir), config={**maml.config, "test_tasks": 4})
    assert plain["support_copies"] == 0
    without = np.load(workdir / PREDICTIONS_FILE)["outputs"]
    # Into a folder of their own: the run's figures and predictions stay.
    copies = tmp_path / "copies"
    results = evaluate_workdir(str(workdir), config=config, results_dir=str(copies))
    assert (results["support_copies"], results["support_augment"]) == (2, 1.5)
    assert json.loads((copies / "results.json").read_text()) == json.loads(
        json.dumps(results)
    )
    assert json.loads((copies / "config.json").read_text())["query_copies"] == 2
    assert json.loads((workdir / "results.json").read_text())["support_copies"] == 0
    np.testing.assert_array_equal(
        np.load(workdir / PREDICTIONS_FILE)["outputs"], without
    )
    outputs = np.load(copies / PREDICTIONS_FILE)["outputs"]
    assert np.abs(outputs - without).max() > 1e-3

    exported = export_workdir(
        str(workdir), str(tmp_path / "models" / "m"), settings=settings
    )
    assert exported["metadata"]["support_copies"] == 2
    assert exported["metadata"]["support_augment"] == 1.5
    assert exported["metadata"]["query_copies"] == 2
    assert_served_as_reported(exported["path"], config, outputs)


def test_an_ensemble_is_served_as_reported(runs, tmp_path):
    """Two runs as one: the reported predictions are the log of the mean of
    the runs' own probabilities, and the export of the two serves them."""
    from experiments.export import export_workdir

    first, second = runs["maml"], runs["reptile"]
    config = {**first.config, "test_tasks": 4}
    own = []
    for exported in (first, second):
        workdir = tmp_path / exported.workdir.name
        shutil.copytree(exported.workdir, workdir)
        evaluate_workdir(str(workdir), config={**exported.config, "test_tasks": 4})
        own.append(np.load(workdir / PREDICTIONS_FILE)["outputs"])
    results = evaluate_workdir(
        str(tmp_path / first.workdir.name),
        config=config,
        ensemble=[(str(second.workdir), second.config)],
    )
    assert results["ensemble"] == [str(second.workdir)]
    assert results["transductive_evaluations"] is None  # each member's own
    assert results["validation"]["inner_steps"] == "each member's own"
    assert results["validation"]["num_tasks"] == config["val_tasks"]
    outputs = np.load(tmp_path / first.workdir.name / PREDICTIONS_FILE)["outputs"]
    probabilities = [np.exp(o - o.max(-1, keepdims=True)) for o in own]
    probabilities = [p / p.sum(-1, keepdims=True) for p in probabilities]
    np.testing.assert_allclose(
        outputs, np.log(np.mean(probabilities, axis=0)), rtol=1e-4, atol=1e-4
    )

    exported = export_workdir(
        str(first.workdir),
        str(tmp_path / "models" / "m"),
        ensemble=[str(second.workdir)],
    )
    assert exported["metadata"]["ensemble_size"] == 2
    assert exported["metadata"]["members"] == "maml,reptile"
    assert_served_as_reported(exported["path"], config, outputs)
