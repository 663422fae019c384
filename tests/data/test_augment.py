"""Affine distortions: the identity at strength 0, the drawn map where a
single bright pixel lands, bounded, seeded, and only in training episodes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import ClassImages, episode_dataset
from tfmeta.data.augment import MAXIMA, affine_matrices, distort


def dot_images(count=16, size=29):
    images = np.zeros((count, size, size, 1), np.float32)
    images[:, 20, 8, 0] = 1.0  # row 20, column 8
    return tf.constant(images)


def test_strength_zero_is_the_identity():
    images = tf.random.uniform([4, 28, 28, 1], seed=1)
    np.testing.assert_array_equal(
        distort(images, tf.constant([1, 2], tf.int64), 0.0), images
    )


def test_a_pixel_moves_where_the_drawn_map_sends_it():
    size = 29
    images = dot_images(size=size)
    seed = tf.constant([3, 4], tf.int64)
    out = distort(images, seed, 1.0).numpy()[..., 0]
    forward = affine_matrices(images.shape[0], seed, 1.0).numpy()
    centre = (size - 1) / 2.0
    point = np.array([8.0 - centre, 20.0 - centre])  # (x, y) about the centre
    moved = 0
    for image, matrix in zip(out, forward):
        target = matrix[:, :2] @ point + matrix[:, 2] * size + centre
        rows, cols = np.nonzero(image > 0.05)
        # The bright mass is centred where the map sends the pixel.
        weights = image[rows, cols]
        centroid = np.array(
            [np.average(cols, weights=weights), np.average(rows, weights=weights)]
        )
        np.testing.assert_allclose(centroid, target, atol=0.75)
        moved += np.abs(target - (point + centre)).max() > 1.0
    assert moved >= 8  # most images move by more than a pixel
    # Bounded: rotation, shear and scale within the maxima at strength 1.
    angles = np.arctan2(forward[:, 1, 0], forward[:, 0, 0])
    assert np.abs(angles).max() <= MAXIMA["rotation"] + 1e-6
    assert np.abs(forward[:, :, 2]).max() <= MAXIMA["shift"] + 1e-6


def test_seeded_and_per_image():
    images = dot_images()
    seed = tf.constant([5, 6], tf.int64)
    a, b = distort(images, seed, 1.0), distort(images, seed, 1.0)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])  # every image its own map
    assert not np.allclose(a, distort(images, tf.constant([5, 7], tf.int64), 1.0))


def classes(num=6, per_class=4, size=12):
    rng = np.random.default_rng(0)
    images = rng.random((num * per_class, size, size, 1)).astype(np.float32)
    offsets = np.arange(0, num * per_class + 1, per_class, dtype=np.int64)
    return ClassImages(images, offsets, [f"A/c{i}" for i in range(num)])


def test_augmented_episodes_draw_the_same_classes_and_images_distorted():
    data = classes()
    plain = next(iter(episode_dataset(data, 3, 1, 2, 2, seed=0)))
    augmented = next(iter(episode_dataset(data, 3, 1, 2, 2, seed=0, augment=1.0)))
    again = next(iter(episode_dataset(data, 3, 1, 2, 2, seed=0, augment=1.0)))
    np.testing.assert_array_equal(plain.support_y, augmented.support_y)
    np.testing.assert_array_equal(augmented.support_x, again.support_x)
    assert not np.allclose(plain.support_x, augmented.support_x)

    # Task 0's images (class after class, support then query) distorted with
    # the task's own stream are the augmented ones.
    def by_class(episode, k, q):
        parts = []
        for j in range(3):
            parts += [
                episode.support_x[0][j * k : (j + 1) * k],
                episode.query_x[0][j * q : (j + 1) * q],
            ]
        return tf.concat(parts, axis=0)

    seed = tf.random.experimental.stateless_fold_in(tf.constant([0, 0], tf.int64), 1)
    np.testing.assert_allclose(
        distort(by_class(plain, 1, 2), seed, 1.0), by_class(augmented, 1, 2), atol=1e-6
    )


@pytest.mark.parametrize("strength", [-0.1, 3.5, float("nan"), True])
def test_bad_strengths_are_refused(strength):
    with pytest.raises(ValueError, match="augment must be"):
        episode_dataset(classes(), 3, 1, 2, 2, seed=0, augment=strength)
