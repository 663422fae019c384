"""The test-time fine-tuning study: its loss against explicit class means,
and its variants against the served figure on a tiny trained run."""

import numpy as np
import pytest
import tensorflow as tf

from experiments import InputError
from experiments.results import support_finetuning as study
from tests.export import fake_omniglot, tiny_config, train_workdir


def test_leave_one_out_loss_equals_explicit_class_means():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    z = rng.normal(size=(y.size, 4))
    expected = []
    for i in range(y.size):
        means = []
        for k in range(3):
            rows = (y == k) & (np.arange(y.size) != i)
            means.append(z[rows].mean(axis=0))
        logits = -((z[i] - np.stack(means)) ** 2).sum(axis=1)
        expected.append(np.log(np.exp(logits).sum()) - logits[y[i]])
    loss = study.leave_one_out_loss(tf.constant(z), tf.constant(y), 3)
    np.testing.assert_allclose(loss.numpy(), np.mean(expected), rtol=1e-12)


@pytest.mark.parametrize(
    "text", ["full:0.1", "align:x:3", "shift:0.1:3", "full:-1:3", "full:nan:3"]
)
def test_a_bad_variant_is_refused(text):
    with pytest.raises(ValueError, match="KIND:LR:STEPS"):
        study.parse_variant(text)


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("support_finetuning")
    config = tiny_config("protonet", "omniglot", str(fake_omniglot(root / "omniglot")))
    return str(train_workdir(root / "run", config))


def test_no_step_answers_as_served(protonet_run):
    lines = study.study(
        protonet_run,
        "test",
        [("align", 1.0, 0), ("full", 1.0, 0), ("full", 10.0, 3)],
        copies=2,
        strength=1.0,
    )
    assert lines[0].startswith("served, 2 support copies: ")
    assert lines[0].endswith("(2 test tasks)")
    assert lines[1].endswith("(paired +0.00 +- 0.00)")
    assert lines[2].endswith("(paired +0.00 +- 0.00)")
    assert len(lines) == 4


def test_fine_tuning_lowers_the_support_loss(protonet_run):
    config = study.checks.trained_workdir_config(protonet_run)
    learner = study.restored(protonet_run, config)
    rng = np.random.default_rng(1)
    support_x = tf.constant(rng.random((6, 28, 28, 1)), tf.float32)
    support_y = tf.constant([0, 0, 1, 1, 2, 2])

    def support_loss(weights):
        z = study.functional.forward(learner.embedding, weights, support_x)
        return study.leave_one_out_loss(z, support_y, 3).numpy()

    weights = learner.embedding_weights()
    before = support_loss(weights)
    after = support_loss(
        study.fine_tuned_weights(learner, 0.01, 3, support_x, support_y)
    )
    assert after < before


def test_another_algorithms_run_is_refused(tmp_path):
    config = tiny_config("maml", "omniglot", str(fake_omniglot(tmp_path / "omniglot")))
    workdir = str(train_workdir(tmp_path / "run", config))
    with pytest.raises(InputError, match="is a maml run, not protonet"):
        study.study(workdir, "test", [], copies=2, strength=1.0)


def test_one_shot_without_copies_is_refused(protonet_run):
    with pytest.raises(InputError, match="--support_copies=0 with one shot"):
        study.study(protonet_run, "test", [], copies=0, strength=1.0)
