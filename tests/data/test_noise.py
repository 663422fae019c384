"""Noisy task streams: the fraction, determinism, and what a corrupted task is."""

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import ClassImages, episode_dataset, shuffle_task_labels


def classes():
    images = np.arange(10 * 6, dtype=np.float32).reshape(60, 1, 1, 1)
    return ClassImages.from_list(
        [f"c{i}" for i in range(10)], [images[6 * i : 6 * i + 6] for i in range(10)]
    )


def stream(fraction, start=0, seed=3):
    base = episode_dataset(
        classes(),
        n_way=5,
        k_shot=2,
        q_query=2,
        meta_batch_size=8,
        seed=1,
        start_episode=start,
    )
    return shuffle_task_labels(base, fraction, seed=seed, start_episode=start), base


def corrupted_flags(noisy, clean, batches):
    flags = []
    for a, b in zip(noisy.take(batches), clean.take(batches)):
        np.testing.assert_array_equal(a.support_x.numpy(), b.support_x.numpy())
        changed = np.any(a.support_y.numpy() != b.support_y.numpy(), axis=1) | np.any(
            a.query_y.numpy() != b.query_y.numpy(), axis=1
        )
        # labels stay a multiset of the same labels
        np.testing.assert_array_equal(
            np.sort(a.query_y.numpy(), 1), np.sort(b.query_y.numpy(), 1)
        )
        flags.append(changed)
    return np.concatenate(flags)


def test_about_the_fraction_of_tasks_is_corrupted_deterministically():
    noisy, clean = stream(0.3)
    flags = corrupted_flags(noisy, clean, 50)
    assert (
        0.2 < flags.mean() < 0.4
    )  # 400 tasks; a permutation can rarely equal the identity
    again, _ = stream(0.3)
    np.testing.assert_array_equal(flags, corrupted_flags(again, clean, 50))


def test_resumed_stream_equals_skipped_stream():
    noisy, _ = stream(0.5)
    resumed, _ = stream(0.5, start=3)
    for a, b in zip(noisy.skip(3).take(2), resumed.take(2)):
        np.testing.assert_array_equal(a.query_y.numpy(), b.query_y.numpy())


def test_zero_fraction_is_identity_and_bad_fraction_is_refused():
    noisy, clean = stream(0.0)
    assert not corrupted_flags(noisy, clean, 5).any()
    with pytest.raises(ValueError, match=r"in \[0, 1\], got 1.5"):
        shuffle_task_labels(tf.data.Dataset.range(1), 1.5, seed=0)
