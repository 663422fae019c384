"""Tests of tfmeta.data.sinusoid."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import (
    Episode,
    sinusoid_dataset,
    sinusoid_function,
    sinusoid_task_parameters,
)


def _batches(dataset):
    return [tuple(np.asarray(t) for t in e) for e in dataset.as_numpy_iterator()]


def _fit(x, y):
    """Least-squares A, phase of y = A sin(x - phase) = a sin x + b cos x."""
    design = np.stack([np.sin(x), np.cos(x)], axis=1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)
    # a = A cos(phase), b = -A sin(phase)
    return np.hypot(a, b), np.arctan2(-b, a)


def test_sinusoid_function_is_the_maml_convention():
    np.testing.assert_allclose(
        sinusoid_function(2.0, np.pi / 2, np.array([0.0, np.pi / 2])),
        [-2.0, 0.0],
        atol=1e-12,
    )


def test_shapes_and_dtypes():
    dataset = sinusoid_dataset(k_shot=5, q_query=7, meta_batch_size=3, seed=0)
    assert dataset.element_spec == Episode(
        tf.TensorSpec([3, 5, 1], tf.float32),
        tf.TensorSpec([3, 5, 1], tf.float32),
        tf.TensorSpec([3, 7, 1], tf.float32),
        tf.TensorSpec([3, 7, 1], tf.float32),
    )
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY


def test_points_follow_the_task_parameters():
    batches = _batches(
        sinusoid_dataset(10, 4, meta_batch_size=4, seed=2, num_episodes=3)
    )
    for episode_index, (support_x, support_y, query_x, query_y) in enumerate(batches):
        tasks = range(4 * episode_index, 4 * episode_index + 4)
        amplitudes, phases = sinusoid_task_parameters(2, tasks)
        for b in range(4):
            np.testing.assert_allclose(
                support_y[b, :, 0],
                sinusoid_function(amplitudes[b], phases[b], support_x[b, :, 0]),
                atol=2e-5,
            )
            np.testing.assert_allclose(
                query_y[b, :, 0],
                sinusoid_function(amplitudes[b], phases[b], query_x[b, :, 0]),
                atol=2e-5,
            )
            # The support points alone determine the same sinusoid.
            amplitude, phase = _fit(support_x[b, :, 0], support_y[b, :, 0])
            np.testing.assert_allclose(
                [amplitude, phase], [amplitudes[b], phases[b]], atol=1e-4
            )


def test_parameters_and_inputs_respect_their_ranges():
    amplitudes, phases = sinusoid_task_parameters(0, range(500))
    assert 0.1 <= amplitudes.min() < 0.3 and 4.8 < amplitudes.max() < 5.0
    assert 0.0 <= phases.min() < 0.1 and 3.0 < phases.max() < np.pi
    # Uniform: means close to the middle of the ranges (std of mean ~ 0.06 and 0.04).
    assert abs(amplitudes.mean() - 2.55) < 0.25 and abs(phases.mean() - np.pi / 2) < 0.2
    support_x, _, query_x, _ = _batches(
        sinusoid_dataset(5, 5, 100, seed=0, num_episodes=1)
    )[0]
    x = np.concatenate([support_x, query_x]).ravel()
    assert -5.0 <= x.min() < -4.9 and 4.9 < x.max() < 5.0
    narrow = _batches(
        sinusoid_dataset(
            3,
            3,
            50,
            seed=0,
            num_episodes=1,
            amplitude_range=(1.0, 1.0),
            x_range=(0.0, 1.0),
        )
    )[0]
    assert (
        np.all(np.abs(narrow[1]) <= 1.0)
        and 0.0 <= narrow[0].min()
        and narrow[0].max() < 1.0
    )


def test_tasks_do_not_depend_on_k_shot():
    short = _batches(sinusoid_dataset(5, 1, 2, seed=9, num_episodes=1))[0]
    long = _batches(sinusoid_dataset(20, 1, 2, seed=9, num_episodes=1))[0]
    for b in range(2):
        np.testing.assert_allclose(
            _fit(short[0][b, :, 0], short[1][b, :, 0]),
            _fit(long[0][b, :, 0], long[1][b, :, 0]),
            atol=1e-4,
        )


def test_deterministic_seeded_and_resumable():
    make = lambda **kw: sinusoid_dataset(4, 4, 3, **kw)
    full = _batches(make(seed=1, num_episodes=5))
    assert len(full) == 5
    for a, b in zip(full, _batches(make(seed=1, num_episodes=5))):
        np.testing.assert_array_equal(a[0], b[0])
    other = _batches(make(seed=2, num_episodes=5))
    assert not np.allclose(full[0][1], other[0][1])
    resumed = _batches(make(seed=1, start_episode=3, num_episodes=2))
    for a, b in zip(resumed, full[3:]):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="k_shot must be an integer >= 1, got 0"):
        sinusoid_dataset(0, 5, 2, seed=0)
    with pytest.raises(
        ValueError, match=r"amplitude_range must be .* got \(5.0, 0.1\)"
    ):
        sinusoid_dataset(5, 5, 2, seed=0, amplitude_range=(5.0, 0.1))
    with pytest.raises(
        ValueError, match="start_episode must be an integer >= 0, got -1"
    ):
        sinusoid_dataset(5, 5, 2, seed=0, start_episode=-1)
