"""Prototypical Networks and the nearest-centroid learner: the prototype rule by
hand, the meta-gradient against finite differences, normalization modes,
a short training run, and the compiled steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import checks
from tests.helpers import batch, classification_task, floatx, seed_tensor, tiny_conv
from tfmeta.algorithms import NearestCentroid, PrototypicalNetwork
from tfmeta.configs import get_config
from tfmeta.models import conv4
from tfmeta.models.batch_norm import normalization_reference


def make(cls=PrototypicalNetwork, seed=1, optimizer=None, **kwargs):
    model = tiny_conv(n_way=3, seed=seed, pooling="max")  # f_phi: [batch, 16]
    return cls(model, optimizer or keras.optimizers.SGD(0.1), **kwargs)


def hand_embeddings(model, support_x, query_x, transductive):
    """f_phi by calling the layers before the head one by one (not statelessly)."""

    def run(x):
        for layer in model.layers[:-1]:
            x = layer(x, training=True)
        return x.numpy()

    if transductive:
        return run(support_x), run(query_x)
    with normalization_reference(int(support_x.shape[0])):
        both = run(tf.concat([support_x, query_x], 0))
    return both[: support_x.shape[0]], both[support_x.shape[0] :]


def hand_logits(support, support_y, query, n_way, distance, temperature=10.0):
    prototypes = np.stack([support[support_y == k].mean(0) for k in range(n_way)])
    if distance == "cosine":
        q = query / np.linalg.norm(query, axis=1, keepdims=True)
        c = prototypes / np.linalg.norm(prototypes, axis=1, keepdims=True)
        return temperature * q @ c.T
    return -((query[:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("transductive", [False, True])
def test_logits_are_negative_distances_to_class_means(distance, transductive):
    with floatx("float64"):
        learner = make(distance=distance, transductive=transductive)
        sx, sy, qx, _ = classification_task(np.random.default_rng(0), k_shot=3)
        logits = learner.predict(learner.adapt(sx, sy), qx, sx).numpy()
        support, query = hand_embeddings(learner.model, sx, qx, transductive)
        expected = hand_logits(support, sy.numpy(), query, 3, distance)
    assert support.shape == (9, 16)
    np.testing.assert_allclose(logits, expected, rtol=1e-10, atol=1e-10)


def test_meta_gradient_matches_central_finite_differences():
    """d J / d theta along random directions, through batch norm with the
    support set's statistics; the head's gradient is exactly zero."""
    with floatx("float64"):
        learner = make(seed=2)
        task = classification_task(np.random.default_rng(2), k_shot=2, q_query=2)
        result = learner.meta_step.task(*task, seed_tensor())
        params = learner.parameters()

        def objective(values):
            support, query = learner.embed_task(values, task[0], task[2])
            prototypes = tf.stack(
                [tf.reduce_mean(support[k * 2 : k * 2 + 2], 0) for k in range(3)]
            )
            return float(learner.loss(learner.logits(query, prototypes), task[3]))

        rng, eps = np.random.default_rng(3), 1e-6
        for _ in range(4):
            direction = [tf.constant(rng.normal(size=p.shape)) for p in params]
            plus = objective([p + eps * d for p, d in zip(params, direction)])
            minus = objective([p - eps * d for p, d in zip(params, direction)])
            numeric = (plus - minus) / (2 * eps)
            analytic = float(
                sum(
                    tf.reduce_sum(g * d)
                    for g, d in zip(result.meta_gradient, direction)
                )
            )
            assert abs(analytic - numeric) <= 1e-6 * max(abs(numeric), 1e-3)
        assert float(result.query_loss) == pytest.approx(objective(params), rel=1e-12)
        for variable, gradient in zip(learner.variables, result.meta_gradient):
            if variable.path.startswith("conv4/head/"):
                assert not np.any(gradient.numpy())


def test_a_query_prediction_does_not_depend_on_the_other_queries():
    sx, sy, qx, qy = classification_task(
        np.random.default_rng(4), q_query=3, dtype="float32"
    )
    for transductive, independent in ((False, True), (True, False)):
        learner = make(seed=4, transductive=transductive)
        prototypes = learner.adapt(sx, sy)
        alone = learner.predict(prototypes, qx[:1], sx).numpy()
        together = learner.predict(prototypes, qx, sx).numpy()[:1]
        assert np.allclose(alone, together, atol=1e-5) == independent
        # Trained as served: the training step's query loss is the evaluation's.
        trained = learner.meta_step.task(sx, sy, qx, qy, seed_tensor())
        evaluated, _, _ = learner.eval_task(sx, sy, qx, qy, 0)
        assert float(trained.query_loss) == pytest.approx(float(evaluated), rel=1e-5)


def test_training_way_is_not_limited_by_the_head():
    """train_n_way=5 on a 3-output model: the loss of 5 prototypes."""
    with floatx("float64"):
        learner = make(seed=5, train_n_way=5, transductive=True)
        sx, sy, qx, qy = classification_task(np.random.default_rng(5), n_way=5)
        result = learner.meta_step.task(sx, sy, qx, qy, seed_tensor())
        support, query = hand_embeddings(learner.model, sx, qx, True)
        logits = hand_logits(support, sy.numpy(), query, 5, "euclidean")
        logits -= logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        expected = -log_p[np.arange(len(qy)), qy.numpy()].mean()
    assert float(result.query_loss) == pytest.approx(expected, rel=1e-10)


def _separable_tasks(rng, templates, tasks, n_way=3, k_shot=2, q_query=3):
    """Class k: a 2x2 pattern templates[k] at the centre of 8x8 noise."""

    def images(classes):
        x = rng.normal(size=(len(classes), 8, 8, 1))
        x[:, 3:5, 3:5] = templates[classes] + 0.3 * rng.normal(
            size=(len(classes), 2, 2, 1)
        )
        return x

    parts = []
    for _ in range(tasks):
        chosen = rng.choice(len(templates), n_way, replace=False)
        parts.append(
            (
                tf.constant(images(np.repeat(chosen, k_shot)), tf.float32),
                tf.constant(np.repeat(np.arange(n_way), k_shot), tf.int32),
                tf.constant(images(np.repeat(chosen, q_query)), tf.float32),
                tf.constant(np.repeat(np.arange(n_way), q_query), tf.int32),
            )
        )
    return batch(*parts)


def test_short_training_raises_accuracy_on_new_classes():
    rng = np.random.default_rng(0)
    train_templates = rng.normal(size=(40, 2, 2, 1))
    test_templates = rng.normal(size=(10, 2, 2, 1))
    test = [
        _separable_tasks(np.random.default_rng(100 + i), test_templates, 10)
        for i in range(5)
    ]
    model = conv4(3, input_shape=(8, 8, 1), filters=8, depth=2, pooling="max", seed=0)
    learner = PrototypicalNetwork(model, keras.optimizers.Adam(1e-2))

    def accuracy():
        return np.mean([learner.meta_eval_step(e)["accuracy"].numpy() for e in test])

    before = accuracy()
    for _ in range(200):
        learner.meta_train_step(_separable_tasks(rng, train_templates, 4))
    after = accuracy()
    assert before < 0.45 and after > 0.65, (before, after)  # measured: 0.36, 0.76


@pytest.mark.parametrize("name", ["protonet", "nearest_centroid"])
def test_gradient_agreement_is_refused_naming_the_setting(name):
    cls = PrototypicalNetwork if name == "protonet" else NearestCentroid
    message = rf"{name} supports task_weighting \['uniform'\], got 'gradient_agreement'"
    with pytest.raises(ValueError, match=message):
        make(cls, task_weighting="gradient_agreement")
    config = {**get_config(name, "omniglot"), "task_weighting": "gradient_agreement"}
    with pytest.raises(ValueError, match=message):  # what the binaries run first
        checks.check_config(config)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"distance": "manhattan"}, "distance must be one of"),
        ({"temperature": 0.0}, "temperature must be a finite number > 0"),
        ({"train_n_way": 1}, "train_n_way must be an integer >= 2 or None"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def _episode(seed=6, tasks=3, dtype="float32"):
    rng = np.random.default_rng(seed)
    return batch(*[classification_task(rng, dtype=dtype) for _ in range(tasks)])


def test_xla_step_equals_plain_step():
    results = []
    for jit_compile in (False, True):
        learner = make(seed=7, jit_compile=jit_compile)
        out = [learner.meta_train_step(_episode(s)) for s in (6, 7)]
        results.append((out, [v.numpy() for v in learner.variables]))
    (plain, plain_values), (xla, xla_values) = results
    for a, b in zip(plain, xla):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5)
    for a, b in zip(plain_values, xla_values):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_map_fn_steps_equal_the_loop():
    with floatx("float64"):
        results = []
        for execution in ("loop", "map_fn"):
            learner = make(
                seed=8, optimizer=keras.optimizers.Adam(1e-2), task_execution=execution
            )
            out = [learner.meta_train_step(_episode(s, 4, "float64")) for s in (1, 2)]
            evaluated = learner.meta_eval_step(_episode(3, 4, "float64"))
            results.append((out, evaluated, [v.numpy() for v in learner.variables]))
    (loop, loop_eval, loop_values), (mapped, mapped_eval, mapped_values) = results
    for a, b in zip(loop + [loop_eval], mapped + [mapped_eval]):
        for key in ("loss", "accuracy"):
            np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=1e-10)
    for a, b in zip(loop_values, mapped_values):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


def test_nearest_centroid_steps_leave_theta_unchanged():
    learner = make(NearestCentroid, seed=9, optimizer=keras.optimizers.Adam(1e-2))
    before = [v.numpy().copy() for v in learner.variables]
    for seed in (1, 2):
        out = learner.meta_train_step(_episode(seed))
        assert float(out["meta_gradient_norm"]) == 0.0
        assert np.isfinite(float(out["loss"])) and 0.0 <= float(out["accuracy"]) <= 1
    for b, v in zip(before, learner.variables):
        np.testing.assert_array_equal(v.numpy(), b)
    assert learner.distance == "cosine" and learner.describe()["temperature"] == 10.0


@pytest.mark.parametrize("transductive", [False, True])
def test_nearest_centroid_accuracy_is_the_nearest_class_mean_rule(transductive):
    learner = make(NearestCentroid, seed=10, transductive=transductive)
    episode = _episode(10, tasks=4)
    accuracy = learner.meta_eval_step(episode)["accuracy"].numpy()
    for i, (sx, sy, qx, qy) in enumerate(zip(*episode)):
        support, query = hand_embeddings(learner.model, sx, qx, transductive)
        logits = hand_logits(support, sy.numpy(), query, 3, "cosine")
        expected = np.mean(np.argmax(logits, 1) == qy.numpy())
        assert accuracy[i] == pytest.approx(expected)
