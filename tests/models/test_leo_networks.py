"""LEO's networks: the relation-network average, the standard deviations, the variables."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import floatx
from tfmeta.models import LEOModel, linear_classifier
from tfmeta.models.leo import gaussian_parameters


def relu(x):
    return np.maximum(x, 0.0)


def test_relation_network_averages_the_n_k_squared_pairs_of_each_class():
    n_way, k_shot, dim, latents = 3, 2, 5, 2
    with floatx("float64"):
        model = LEOModel(dim, num_latents=latents, seed=1)
        params = model.split_parameters([v.value for v in model.trainable_variables])
        rng = np.random.default_rng(0)
        x = rng.normal(size=(n_way * k_shot, dim))
        y = np.array([2, 0, 1, 0, 2, 1])  # not class-major: grouping uses the labels
        mean, stddev = model.latent_distribution(params, tf.constant(x), y, n_way)
    encoder = params.encoder[0].numpy()
    r0, r1, r2 = (kernel.numpy() for kernel in params.relation_network)

    def g_r(a, b):  # relation MLP on one pair, by hand
        return relu(relu(np.concatenate([a, b]) @ r0) @ r1) @ r2

    codes = x @ encoder  # g_phi_e
    for n in range(n_way):
        members = np.flatnonzero(y == n)
        # 1/(N K^2) sum over k_n in class n, and all m and k_m (every support example)
        pairs = [g_r(codes[i], codes[j]) for i in members for j in range(len(x))]
        assert len(pairs) == n_way * k_shot**2
        expected = np.sum(pairs, axis=0) / (n_way * k_shot**2)
        np.testing.assert_allclose(mean.numpy()[n], expected[:latents], rtol=1e-12)
        np.testing.assert_allclose(
            stddev.numpy()[n],
            np.maximum(np.exp(expected[latents:]) - 1.0, 1e-10),
            rtol=1e-12,
        )


def test_standard_deviation_parameterization_and_floor():
    outputs = tf.constant([[0.3, -2.0, 0.5, -4.0]], tf.float64)  # means, u
    mean, stddev = gaussian_parameters(outputs, stddev_offset=0.25)
    np.testing.assert_allclose(mean.numpy(), [[0.3, -2.0]])
    expected = [math.exp(0.5) - 0.75, 1e-10]  # exp(-4) - 0.75 < 0: floored
    np.testing.assert_allclose(stddev.numpy(), [expected], rtol=1e-12)


def test_weight_distribution_uses_the_glorot_offset():
    n_way, dim = 4, 6
    with floatx("float64"):
        model = LEOModel(dim, num_latents=3, seed=2)
        params = model.split_parameters([v.value for v in model.trainable_variables])
        z = tf.constant(np.random.default_rng(1).normal(size=(n_way, 3)))
        mean, stddev = model.weight_distribution(params, z)
    outputs = z.numpy() @ params.decoder[0].numpy()
    offset = math.sqrt(2.0 / (n_way + dim))
    np.testing.assert_allclose(mean.numpy(), outputs[:, :dim], rtol=1e-12)
    np.testing.assert_allclose(
        stddev.numpy(),
        np.maximum(np.exp(outputs[:, dim:]) - 1.0 + offset, 1e-10),
        rtol=1e-12,
    )


def test_variables_hold_every_network_and_both_learning_rates():
    model = LEOModel(7, num_latents=4, inner_lr=0.5, finetune_lr=0.01, seed=0)
    paths = sorted(v.path for v in model.trainable_variables)
    assert paths == sorted(
        [
            "encoder/kernel",
            "relation_network/relation0/kernel",
            "relation_network/relation1/kernel",
            "relation_network/relation2/kernel",
            "decoder/kernel",
            "leo/inner_lr",
            "leo/finetune_lr",
        ]
    )
    params = model.split_parameters([v.value for v in model.trainable_variables])
    assert params.encoder[0].shape == (7, 4) and params.decoder[0].shape == (4, 14)
    assert [k.shape for k in params.relation_network] == [(8, 8)] * 3
    np.testing.assert_array_equal(params.inner_lr.numpy(), np.full(4, 0.5, np.float32))
    np.testing.assert_array_equal(
        params.finetune_lr.numpy(), np.full(7, 0.01, np.float32)
    )
    assert len(model.network_weights(params)) == 5
    with pytest.raises(ValueError, match="expected 7 tensors"):
        model.split_parameters(params.encoder)
    with pytest.raises(ValueError, match="num_latents must be an integer >= 1"):
        LEOModel(7, num_latents=0)


def test_same_seed_same_initialization():
    first, second = LEOModel(5, 3, seed=4), LEOModel(5, 3, seed=4)
    for a, b in zip(first.trainable_variables, second.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_linear_classifier_is_x_w_plus_b():
    model = linear_classifier(3, 4, seed=0)
    kernel, bias = model.trainable_variables
    bias.assign([0.1, -0.2, 0.3])
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    np.testing.assert_allclose(
        model(x).numpy(), x @ kernel.numpy() + bias.numpy(), rtol=1e-6
    )
