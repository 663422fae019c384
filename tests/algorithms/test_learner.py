"""Behaviour shared by every learner: compiled steps, statelessness, normalization modes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import batch, classification_task, floatx, seed_tensor, tiny_conv
from tfmeta.algorithms import (
    ALGORITHMS,
    FOMAML,
    LEO,
    MAML,
    MAMLPlusPlus,
    MetaSGD,
    NearestCentroid,
    ProtoMAML,
    PrototypicalNetwork,
    Reptile,
    UnicornMAML,
    UnicornReptile,
)
from tfmeta.core import FastWeightLearner

# The algorithms that adapt any Keras model's weights by inner steps (LEO
# needs its own model; Prototypical Networks adapt no weights).
FAST_WEIGHT_ALGORITHMS = sorted(
    n for n, a in ALGORITHMS.items() if issubclass(a.learner, FastWeightLearner)
)


def make(name, model, optimizer=None, **kwargs):
    return ALGORITHMS[name].learner(
        model, optimizer or keras.optimizers.Adam(1e-2), inner_lr=0.4, **kwargs
    )


def episode(seed=0, tasks=3, dtype="float32"):
    rng = np.random.default_rng(seed)
    return batch(*[classification_task(rng, dtype=dtype) for _ in range(tasks)])


@pytest.mark.parametrize("name", FAST_WEIGHT_ALGORITHMS)
def test_meta_step_traces_once_and_changes_weights(name):
    learner = make(name, tiny_conv(seed=0), inner_steps=2)
    before = [v.numpy().copy() for v in learner.variables]
    for seed in range(3):
        out = learner.meta_train_step(episode(seed))
    assert learner.train_tracing_count == 1
    assert np.isfinite(float(out["loss"])) and 0.0 <= float(out["accuracy"]) <= 1.0
    np.testing.assert_allclose(
        out["task_weights"].numpy(), np.full(3, 1 / 3), rtol=1e-6
    )
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, learner.variables))


@pytest.mark.parametrize("name", FAST_WEIGHT_ALGORITHMS)
def test_xla_step_equals_plain_step(name):
    # SGD, not Adam: Adam turns float32 round-off in near-zero gradients (conv
    # biases before batch norm) into full-size steps.
    results = []
    for jit in (False, True):
        learner = make(
            name,
            tiny_conv(seed=7),
            keras.optimizers.SGD(0.1),
            inner_steps=2,
            jit_compile=jit,
        )
        out = learner.meta_train_step(episode(1))
        results.append(
            (float(out["loss"]), [v.numpy().copy() for v in learner.variables])
        )
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for plain, xla in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(plain, xla, rtol=1e-4, atol=1e-5)


def test_meta_gradient_is_mean_of_task_gradients():
    with floatx("float64"):
        model = tiny_conv(seed=3)
        learner = MAML(model, keras.optimizers.SGD(1.0), inner_lr=0.3)
        rng = np.random.default_rng(3)
        tasks = [classification_task(rng) for _ in range(3)]
        per_task = [
            learner.meta_step.task(*task, seed_tensor(i)).meta_gradient
            for i, task in enumerate(tasks)
        ]
        before = [v.numpy().copy() for v in learner.variables]
        learner.meta_train_step(batch(*tasks))
        for k, variable in enumerate(learner.variables):
            expected = before[k] - np.mean([g[k].numpy() for g in per_task], axis=0)
            np.testing.assert_allclose(
                variable.numpy(), expected, rtol=1e-9, atol=1e-12
            )


def test_adapt_does_not_touch_variables_and_lowers_support_loss():
    learner = make("maml", tiny_conv(seed=5), eval_inner_steps=20)
    support_x, support_y, _, _ = classification_task(
        np.random.default_rng(5), dtype="float32"
    )
    before = [v.numpy().copy() for v in learner.variables]
    fast = learner.adapt(support_x, support_y)
    for b, v in zip(before, learner.variables):
        np.testing.assert_array_equal(b, v.numpy())
    initial = float(
        learner.loss(
            learner.predict(learner.parameters(), support_x, support_x), support_y
        )
    )
    adapted = float(
        learner.loss(learner.predict(fast, support_x, support_x), support_y)
    )
    assert adapted < 0.3 * initial


def test_non_transductive_prediction_does_not_depend_on_other_queries():
    support_x, support_y, query_x, _ = classification_task(
        np.random.default_rng(6), dtype="float32"
    )
    for transductive, independent in ((False, True), (True, False)):
        learner = make("maml", tiny_conv(seed=6), transductive=transductive)
        fast = learner.adapt(support_x, support_y)
        alone = learner.predict(fast, query_x[:1], support_x).numpy()
        together = learner.predict(fast, query_x, support_x).numpy()[:1]
        assert np.allclose(alone, together, atol=1e-5) == independent


def test_non_transductive_needs_support_set():
    learner = make("maml", tiny_conv(seed=6), transductive=False)
    with pytest.raises(ValueError, match="support_x"):
        learner.predict(learner.parameters(), tf.zeros([2, 8, 8, 1]))


@pytest.mark.parametrize("weighting", ["uniform", "gradient_agreement"])
def test_task_results_carry_updates_only_for_gradient_agreement(weighting):
    """Uniform weights never read theta - theta'_i, so the per-task function
    does not return it (an unused output costs compile time and memory)."""
    learner = make("maml", tiny_conv(seed=9), task_weighting=weighting)
    result = learner.meta_step.task(
        *classification_task(np.random.default_rng(9), dtype="float32"), seed_tensor()
    )
    expected = 0 if weighting == "uniform" else len(learner.variables)
    assert len(result.update) == expected
    assert len(result.meta_gradient) == len(learner.variables)


def test_head_only_adaptation_moves_only_the_last_layer():
    learner = make(
        "fomaml",
        tiny_conv(seed=8),
        adapt_variables="head",
        task_weighting="gradient_agreement",  # the weighting that reads updates
    )
    result = learner.meta_step.task(
        *classification_task(np.random.default_rng(8), dtype="float32"), seed_tensor()
    )
    head = {id(v) for v in learner.model.layers[-1].trainable_variables}
    assert len(result.update) == len(learner.variables)
    for variable, update in zip(learner.variables, result.update):
        moved = float(tf.reduce_max(tf.abs(update))) > 0
        assert moved == (id(variable) in head), variable.path


def test_eval_with_zero_steps_equals_unadapted_prediction():
    learner = make("reptile", tiny_conv(seed=9))
    task = classification_task(np.random.default_rng(9), dtype="float32")
    out = learner.meta_eval_step(batch(task), inner_steps=0)
    expected = learner.loss(
        learner.predict(learner.parameters(), task[2], task[0]), task[3]
    )
    assert float(out["loss"][0]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"problem": "ranking"}, "problem"),
        ({"adapt_variables": "body"}, "adapt_variables"),
        ({"inner_steps": -1}, "inner_steps and eval_inner_steps must be >= 0"),
        ({"task_weighting": "softmax"}, "task_weighting"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make("maml", tiny_conv(), **kwargs)


def test_learner_classes_are_registered():
    learners = {name: algorithm.learner for name, algorithm in ALGORITHMS.items()}
    assert learners == {
        "maml": MAML,
        "fomaml": FOMAML,
        "maml_plus_plus": MAMLPlusPlus,
        "meta_sgd": MetaSGD,
        "proto_maml": ProtoMAML,
        "unicorn_maml": UnicornMAML,
        "unicorn_reptile": UnicornReptile,
        "reptile": Reptile,
        "leo": LEO,
        "protonet": PrototypicalNetwork,
        "nearest_centroid": NearestCentroid,
    }
    assert [a.name for a in ALGORITHMS.values() if a.model] == ["leo"]


@pytest.mark.parametrize(
    "steps,jit_compile,unroll,looped",
    [
        (3, True, True, False),
        (3, False, True, True),
        (3, True, False, True),
        (11, True, True, True),
    ],
    ids=["xla-unrolled", "plain-while", "xla-unroll-off", "xla-too-many-steps"],
)
def test_inner_loop_without_gradient_unrolls_short_loops_under_xla(
    steps, jit_compile, unroll, looped
):
    """XLA on CPU runs a while loop's convolutions far slower, so a short
    inner loop with no gradient through it is unrolled there; elsewhere, with
    unroll_inner_loop=False or with many steps it stays a tf.while_loop. The
    adapted weights are the same either way."""
    with floatx("float64"):
        learner = make("fomaml", tiny_conv(seed=9), unroll_inner_loop=unroll)
        support_x, support_y, _, _ = classification_task(np.random.default_rng(9))

        def adapt(x, y):
            return learner.inner_loop(
                learner.parameters(), x, y, steps, differentiable=False
            )

        compiled = tf.function(adapt, jit_compile=jit_compile, autograph=False)
        graph = compiled.get_concrete_function(support_x, support_y).graph
        types = {op.type for op in graph.get_operations()}
        assert bool(types & {"While", "StatelessWhile"}) == looped
        for got, want in zip(
            compiled(support_x, support_y), adapt(support_x, support_y)
        ):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-9, atol=1e-12)


def test_every_registered_learner_is_a_top_level_name():
    import tfmeta

    for name, algorithm in ALGORITHMS.items():
        learner = algorithm.learner
        assert getattr(tfmeta, learner.__name__) is learner, name
        assert learner.__name__ in tfmeta.__all__, name


def test_labels_of_the_other_problem_are_refused_naming_the_argument():
    """A sinusoid episode given to a classifier (the default problem), or
    class labels to a regressor, is one ValueError naming ``problem``, not a
    rank error from inside the loss."""
    from tests.helpers import tiny_mlp
    from tfmeta.data import sinusoid_dataset

    regression_episode = next(iter(sinusoid_dataset(5, 5, 2, seed=1)))
    classifier = MAML(tiny_mlp(), keras.optimizers.Adam(1e-3), inner_lr=0.01)
    for step in (classifier.meta_train_step, classifier.meta_eval_step):
        with pytest.raises(
            ValueError, match="build the learner with problem='regression'"
        ):
            step(regression_episode)
    regressor = MAML(
        tiny_conv(), keras.optimizers.Adam(1e-3), inner_lr=0.01, problem="regression"
    )
    with pytest.raises(ValueError, match="problem='classification'") as raised:
        regressor.meta_train_step(episode())
    assert "int32" in str(raised.value) and "\n" not in str(raised.value)
