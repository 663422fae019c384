"""LEO: the KL and penalty terms, the inner loop by hand, the meta-gradient, the compiled step."""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import batch, floatx, seed_tensor
from tfmeta.algorithms import LEO, get_algorithm
from tfmeta.algorithms.leo_losses import (
    kl_analytic,
    kl_one_sample,
    orthogonality_penalty,
)
from tfmeta.models import LEOModel, conv4
from tfmeta.training import Trainer

PATHS = {
    "encoder": "encoder/kernel",
    "relation": "relation_network/relation",
    "decoder": "decoder/kernel",
    "alpha": "leo/inner_lr",
    "eta": "leo/finetune_lr",
}


def make_learner(dim=6, latents=3, n_way=3, seed=0, optimizer=None, **kwargs):
    settings = {"inner_steps": 2, "finetune_steps": 2, "dropout_rate": 0.3}
    settings.update(kwargs)
    model = LEOModel(dim, num_latents=latents, seed=seed)
    return LEO(model, optimizer or keras.optimizers.SGD(0.1), n_way=n_way, **settings)


def embedding_task(rng, n_way=3, k_shot=2, q_query=2, dim=6, dtype="float64"):
    """Clustered, L2-normalized embeddings with class-major labels."""
    centers = rng.normal(size=(n_way, dim))

    def draw(count):
        x = np.repeat(centers, count, axis=0) + 0.5 * rng.normal(
            size=(n_way * count, dim)
        )
        return tf.constant(x / np.linalg.norm(x, axis=1, keepdims=True), dtype)

    labels = [
        tf.constant(np.repeat(np.arange(n_way), c), tf.int32) for c in (k_shot, q_query)
    ]
    return draw(k_shot), labels[0], draw(q_query), labels[1]


def parameters(learner):
    return learner.model.split_parameters(learner.parameters())


def log_normal(x, mean, stddev):
    return -0.5 * ((x - mean) / stddev) ** 2 - np.log(stddev) - 0.5 * np.log(2 * np.pi)


# ------------------------------------------------------------------ KL term
def test_kl_terms_equal_their_formulas():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 4))
    stddev = rng.uniform(0.2, 2.0, size=(3, 4))
    z = rng.normal(size=(3, 4))
    closed_form = np.mean(-np.log(stddev) + (stddev**2 + mean**2) / 2 - 0.5)
    assert float(kl_analytic(tf.constant(mean), tf.constant(stddev))) == pytest.approx(
        closed_form, rel=1e-12
    )
    one_sample = np.mean(log_normal(z, mean, stddev) - log_normal(z, 0.0, 1.0))
    estimate = kl_one_sample(tf.constant(z), tf.constant(mean), tf.constant(stddev))
    assert float(estimate) == pytest.approx(one_sample, rel=1e-12)
    # Unbiased: averaged over many reparameterized draws it is the closed form.
    draws = mean + stddev * rng.normal(size=(20000, 3, 4))
    per_draw = np.mean(
        log_normal(draws, mean, stddev) - log_normal(draws, 0.0, 1.0), axis=(1, 2)
    )
    error = 4 * per_draw.std() / math.sqrt(len(per_draw))
    averaged = kl_one_sample(tf.constant(draws), tf.constant(mean), tf.constant(stddev))
    assert abs(float(averaged) - closed_form) < error


def test_learner_kl_is_the_estimate_at_its_own_sample(monkeypatch):
    with floatx("float64"):
        learner = make_learner(dropout_rate=0.0)
    support_x, support_y, _, _ = embedding_task(np.random.default_rng(1))
    params = parameters(learner)
    mean, stddev = learner.model.latent_distribution(params, support_x, support_y, 3)
    draws = []
    sample = learner._sample

    def recording_sample(*args, **kwargs):
        draws.append(sample(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(learner, "_sample", recording_sample)
    seed = seed_tensor(3)
    adapted = learner.leo_adapt(params, support_x, support_y, 1, 0, True, seed)
    z = draws[0].numpy()  # the first draw is the latent code
    assert np.any(z != mean.numpy())  # sampled: mu + sigma * epsilon
    expected = np.mean(
        log_normal(z, mean.numpy(), stddev.numpy()) - log_normal(z, 0.0, 1.0)
    )
    assert float(adapted.kl) == pytest.approx(expected, rel=1e-10)

    learner.kl_estimator = "analytic"
    adapted = learner.leo_adapt(params, support_x, support_y, 1, 0, True, seed)
    assert float(adapted.kl) == pytest.approx(
        float(kl_analytic(mean, stddev)), rel=1e-12
    )

    learner.deterministic = True  # z = mu: no sample, no KL term
    draws.clear()
    adapted = learner.leo_adapt(params, support_x, support_y, 1, 0, True, seed)
    np.testing.assert_array_equal(draws[0].numpy(), mean.numpy())
    assert float(adapted.kl) == 0.0


# -------------------------------------------------------- inner loop by hand
def mock_identity_networks(monkeypatch, learner):
    """Encoder and decoder mocked to identity: z_n = class mean of the support
    embeddings (h = d), w_n = z_n (deterministic here)."""

    def latent_distribution(params, x, y, n_way):
        one_hot = tf.one_hot(y, n_way, dtype=x.dtype)
        means = (
            tf.matmul(one_hot, x, transpose_a=True)
            / tf.reduce_sum(one_hot, axis=0)[:, None]
        )
        return means, tf.ones_like(means)

    monkeypatch.setattr(learner.model, "latent_distribution", latent_distribution)
    monkeypatch.setattr(
        learner.model, "weight_distribution", lambda params, z: (z, tf.ones_like(z))
    )


def test_inner_loop_with_identity_networks_matches_a_hand_computed_value(
    monkeypatch,
):
    # N = 2, K = 1, d = h = 1: x = +1 (class 0) and -1 (class 1), so z = [1, -1].
    # L(z) = sum of the two cross-entropies; logits of x are [x z_0, x z_1]:
    # dL/dz_0 = -2 (1 - s(2)), s the logistic function, and z_1 mirrors z_0.
    with floatx("float64"):
        learner = make_learner(dim=1, latents=1, n_way=2, dropout_rate=0.0)
    learner.model.inner_lr.assign([0.5])
    learner.model.finetune_lr.assign([0.25])
    mock_identity_networks(monkeypatch, learner)
    support_x = tf.constant([[1.0], [-1.0]], tf.float64)
    support_y = tf.constant([0, 1], tf.int32)

    def logistic(t):
        return 1.0 / (1.0 + math.exp(-t))

    a = 1.0 + 0.5 * 2 * (1 - logistic(2.0))  # one latent step: 1.1192...
    b = a + 0.25 * 2 * (1 - logistic(2 * a))  # then one fine-tuning step
    latent_only = learner.leo_adapt(
        parameters(learner), support_x, support_y, 1, 0, training=False
    )
    np.testing.assert_allclose(latent_only.weights.numpy(), [[a], [-a]], rtol=1e-12)
    assert a == pytest.approx(1.119202922, rel=1e-9)
    both = learner.leo_adapt(
        parameters(learner), support_x, support_y, 1, 1, training=False
    )
    np.testing.assert_allclose(both.weights.numpy(), [[b], [-b]], rtol=1e-12)


def test_inner_loop_with_identity_networks_matches_numpy_gradient_descent(
    monkeypatch,
):
    n_way, k_shot, dim = 3, 2, 4
    with floatx("float64"):
        learner = make_learner(dim=dim, latents=dim, n_way=n_way, dropout_rate=0.0)
    alpha, eta = np.array([0.5, 1.0, 2.0, 0.7]), np.array([0.3, 0.1, 0.9, 0.4])
    learner.model.inner_lr.assign(alpha)
    learner.model.finetune_lr.assign(eta)
    mock_identity_networks(monkeypatch, learner)
    support_x, support_y, _, _ = embedding_task(
        np.random.default_rng(2), n_way, k_shot, dim=dim
    )
    x, y = support_x.numpy(), np.eye(n_way)[support_y.numpy()]

    def gradient(w):  # d/dw of sum_i CE(softmax(x_i w^T), y_i) / K
        logits = x @ w.T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (p - y).T @ x / k_shot

    w = y.T @ x / k_shot  # class means
    for _ in range(3):
        w = w - alpha * gradient(w)
    for _ in range(2):
        w = w - eta * gradient(w)
    adapted = learner.leo_adapt(
        parameters(learner), support_x, support_y, 3, 2, training=False
    )
    np.testing.assert_allclose(adapted.weights.numpy(), w, rtol=1e-12)


def test_latent_adaptation_lowers_the_support_loss():
    with floatx("float64"):
        learner = make_learner(dim=8, latents=4, n_way=3, seed=5)
    support_x, support_y, _, _ = embedding_task(np.random.default_rng(5), 3, 2, dim=8)
    params = parameters(learner)
    losses = []
    for steps in range(6):
        weights = learner.leo_adapt(
            params, support_x, support_y, steps, 0, training=False
        ).weights
        logits = learner.predict(weights, support_x)
        losses.append(float(learner.inner_loss(logits, support_y)))
    assert all(after < before for before, after in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses


def test_inner_loss_sums_each_classes_mean_cross_entropy():
    learner = make_learner(n_way=3)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 3))
    balanced = np.array([0, 0, 1, 1, 2, 2], np.int32)
    unbalanced = np.array([0, 0, 0, 1, 2, 2], np.int32)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    cross_entropy = {
        key: -log_p[np.arange(6), labels]
        for key, labels in (("balanced", balanced), ("unbalanced", unbalanced))
    }
    value = learner.inner_loss(tf.constant(logits), tf.constant(balanced))
    # K = 2 of each class: the reference's sum over the N*K examples divided by K.
    np.testing.assert_allclose(value.numpy(), cross_entropy["balanced"].sum() / 2)
    value = learner.inner_loss(tf.constant(logits), tf.constant(unbalanced))
    by_class = [cross_entropy["unbalanced"][unbalanced == c].mean() for c in range(3)]
    np.testing.assert_allclose(value.numpy(), sum(by_class))


# ------------------------------------------------------------- meta-gradient
def test_meta_gradient_reaches_every_network_and_both_learning_rates():
    learner = make_learner(seed=1)
    task = embedding_task(np.random.default_rng(3), dtype="float32")
    result = learner.meta_step.task(*task, seed_tensor(0))
    norms = {
        v.path: float(tf.norm(g))
        for v, g in zip(learner.variables, result.meta_gradient)
    }
    for part, path in PATHS.items():
        matching = [n for p, n in norms.items() if p.startswith(path)]
        assert matching and all(math.isfinite(n) and n > 0 for n in matching), (
            part,
            norms,
        )
    assert len([p for p in norms if p.startswith(PATHS["relation"])]) == 3


def test_meta_gradient_matches_finite_differences():
    # Sampling and dropout are fixed by the task seed, so the objective is a
    # deterministic function of the parameters. gamma = 0: the encoder penalty
    # stops the gradient through z' by design, which finite differences do not.
    with floatx("float64"):
        learner = make_learner(
            dim=4, latents=2, n_way=2, seed=3, kl_weight=0.3, encoder_penalty_weight=0.0
        )
    task = embedding_task(np.random.default_rng(4), n_way=2, dim=4)
    seed = seed_tensor(7)

    def objective():
        result = learner.task_result(*task, seed)
        return float(
            result.query_loss + learner.kl_weight * result.extras["kl"]
        ), result

    _, result = objective()
    theta = [v.numpy().copy() for v in learner.variables]
    rng = np.random.default_rng(0)
    epsilon = 1e-6
    for _ in range(2):
        direction = [rng.normal(size=t.shape) for t in theta]
        values = []
        for sign in (1.0, -1.0):
            for variable, t, d in zip(learner.variables, theta, direction):
                variable.assign(t + sign * epsilon * d)
            values.append(objective()[0])
        numeric = (values[0] - values[1]) / (2 * epsilon)
        analytic = sum(
            float(np.sum(g.numpy() * d))
            for g, d in zip(result.meta_gradient, direction)
        )
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    for variable, t in zip(learner.variables, theta):
        variable.assign(t)


# ------------------------------------------------------------ the outer step
def test_meta_step_is_mean_task_gradient_plus_regularization_gradient():
    with floatx("float64"):
        learner = make_learner(
            seed=2,
            optimizer=keras.optimizers.SGD(1.0),
            gradient_clip_value=None,
            gradient_clip_variable_norm=None,
            l2_penalty_weight=0.1,
            orthogonality_penalty_weight=0.2,
        )
    rng = np.random.default_rng(6)
    tasks = [embedding_task(rng) for _ in range(3)]
    per_task = [
        learner.meta_step.task(*task, tf.constant([0, i], tf.int64)).meta_gradient
        for i, task in enumerate(tasks)
    ]
    params = learner.parameters()
    with tf.GradientTape() as tape:
        tape.watch(params)
        regularization = learner.regularization(learner.model.split_parameters(params))
    reg_gradient = tape.gradient(
        regularization, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    before = [v.numpy().copy() for v in learner.variables]
    for _ in range(2):
        out = learner.meta_train_step(batch(*tasks))
        if learner.outer_optimizer.iterations.numpy() != 1:
            continue
        for k, variable in enumerate(learner.variables):
            expected = before[k] - (
                np.mean([g[k].numpy() for g in per_task], axis=0)
                + reg_gradient[k].numpy()
            )
            np.testing.assert_allclose(
                variable.numpy(), expected, rtol=1e-9, atol=1e-12
            )
    assert learner.train_tracing_count == 1
    assert float(out["regularization"]) > 0 and np.isfinite(float(out["objective"]))
    np.testing.assert_allclose(out["task_weights"].numpy(), np.full(3, 1 / 3))


def test_regularization_equals_l2_and_orthogonality_formulas():
    with floatx("float64"):
        learner = make_learner(l2_penalty_weight=0.01, orthogonality_penalty_weight=0.5)
    params = parameters(learner)
    kernels = [params.encoder[0], *params.relation_network, params.decoder[0]]
    l2 = sum(float(np.sum(k.numpy() ** 2)) / 2 for k in kernels)
    decoder = params.decoder[0].numpy()  # [h, 2d]: rows are latent dimensions
    unit = decoder / np.linalg.norm(decoder, axis=1, keepdims=True)
    orthogonality = np.mean((unit @ unit.T - np.eye(len(unit))) ** 2)
    assert float(learner.regularization(params)) == pytest.approx(
        0.01 * l2 + 0.5 * orthogonality, rel=1e-12
    )
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
    assert float(orthogonality_penalty(tf.constant(2.0 * rotation))) < 1e-20


def test_clipping_is_by_value_then_by_each_variables_norm():
    learner = make_learner(gradient_clip_value=1.0, gradient_clip_variable_norm=1.0)
    first, second = learner.clip(
        [tf.constant([3.0, -4.0, 0.05]), tf.constant([[0.01]])]
    )
    by_value = np.array([1.0, -1.0, 0.05])
    np.testing.assert_allclose(
        first.numpy(), by_value / np.linalg.norm(by_value), rtol=1e-6
    )
    np.testing.assert_allclose(second.numpy(), [[0.01]])


def test_xla_step_equals_plain_step():
    # Without random draws: XLA's stateless generator gives other numbers.
    results = []
    for jit in (False, True):
        learner = make_learner(
            seed=4,
            jit_compile=jit,
            deterministic=True,
            dropout_rate=0.0,
            inner_steps=1,
            finetune_steps=1,
        )
        out = learner.meta_train_step(
            batch(embedding_task(np.random.default_rng(8), dtype="float32"))
        )
        results.append(
            (float(out["loss"]), [v.numpy().copy() for v in learner.variables])
        )
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for plain, xla in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(plain, xla, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------- the interface
def test_adapt_predict_and_eval_step_agree_and_leave_variables_alone():
    learner = make_learner(seed=6, eval_inner_steps=3)
    task = embedding_task(np.random.default_rng(9), dtype="float32")
    before = [v.numpy().copy() for v in learner.variables]
    weights = learner.adapt(task[0], task[1])
    assert weights.shape == (3, 6)
    for b, v in zip(before, learner.variables):
        np.testing.assert_array_equal(b, v.numpy())
    logits = learner.predict(weights, task[2])
    np.testing.assert_allclose(
        logits.numpy(), task[2].numpy() @ weights.numpy().T, rtol=1e-6
    )
    out = learner.meta_eval_step(batch(task))
    assert float(out["loss"][0]) == pytest.approx(
        float(learner.loss(logits, task[3])), rel=1e-5
    )
    assert float(out["accuracy"][0]) == pytest.approx(
        float(learner.metric(logits, task[3]))
    )


def test_checkpoint_restores_networks_and_learning_rates(tmp_path):
    task = embedding_task(np.random.default_rng(10), dtype="float32")

    def episodes(start):
        return iter(lambda: batch(task, task), None)

    trained = make_learner(seed=0, optimizer=keras.optimizers.Adam(1e-2))
    Trainer(trained, str(tmp_path), episodes, print_fn=lambda line: None).train(2)
    fresh = make_learner(seed=9, optimizer=keras.optimizers.Adam(1e-2))
    assert Trainer(fresh, str(tmp_path), episodes).restore()
    assert int(fresh.outer_optimizer.iterations.numpy()) == 2
    for a, b in zip(trained.model.variables, fresh.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(fresh.model.inner_lr.numpy(), 1.0)  # alpha was meta-learned


def test_bad_settings_are_refused():
    model = LEOModel(4, num_latents=2)
    with pytest.raises(ValueError, match=r"leo supports task_weighting \['uniform'\]"):
        LEO(
            model, keras.optimizers.Adam(), n_way=2, task_weighting="gradient_agreement"
        )
    with pytest.raises(TypeError, match="needs a tfmeta.models.LEOModel"):
        LEO(
            conv4(2, input_shape=(8, 8, 1), filters=2, depth=1),
            keras.optimizers.Adam(),
            n_way=2,
        )
    with pytest.raises(ValueError, match="kl_estimator"):
        LEO(model, keras.optimizers.Adam(), n_way=2, kl_estimator="exact")
    learner = LEO(model, keras.optimizers.Adam(), n_way=2)
    with pytest.raises(ValueError, match="n_way \\* k_shot = 2 \\* K examples"):
        learner.adapt(tf.zeros([3, 4]), tf.zeros([3], tf.int32))
    assert get_algorithm("leo").learner is LEO
