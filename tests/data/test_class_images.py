"""Tests of tfmeta.data.class_images."""

import numpy as np
import pytest

from tfmeta.data import ClassImages


def _classes():
    # Class c holds c + 2 images; image j of class c is filled with 10 * c + j.
    arrays = [
        np.full((c + 2, 2, 3, 1), 0, np.float32)
        + (10 * c + np.arange(c + 2))[:, None, None, None]
        for c in range(3)
    ]
    return ClassImages.from_list(["a", "b", "c"], arrays)


def test_from_list_offsets_and_properties():
    classes = _classes()
    np.testing.assert_array_equal(classes.class_offsets, [0, 2, 5, 9])
    assert classes.class_offsets.dtype == np.int64
    np.testing.assert_array_equal(classes.images_per_class, [2, 3, 4])
    assert classes.num_classes == 3
    assert classes.image_shape == (2, 3, 1)
    assert classes.images.dtype == np.float32
    assert classes.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(
        classes.images[:, 0, 0, 0], [0, 1, 10, 11, 12, 20, 21, 22, 23]
    )
    np.testing.assert_array_equal(classes.images_of(1)[:, 1, 2, 0], [10, 11, 12])


def test_subset_keeps_the_given_order_and_images():
    classes = _classes()
    subset = classes.subset([2, 0])
    assert subset.class_names == ("c", "a")
    np.testing.assert_array_equal(subset.class_offsets, [0, 4, 6])
    np.testing.assert_array_equal(subset.images[:, 0, 0, 0], [20, 21, 22, 23, 0, 1])
    empty = classes.subset([])
    assert empty.num_classes == 0 and empty.images.shape == (0, 2, 3, 1)


def test_subset_rejects_bad_indices():
    classes = _classes()
    with pytest.raises(IndexError, match=r"\[3\] are out of range \[0, 3\)"):
        classes.subset([0, 3])
    with pytest.raises(ValueError, match="distinct"):
        classes.subset([1, 1])


def test_from_list_rejects_inconsistent_input():
    with pytest.raises(ValueError, match="2 class names but 1 image arrays"):
        ClassImages.from_list(["a", "b"], [np.zeros((1, 2, 2, 1))])
    with pytest.raises(ValueError, match=r"'b' have shape \(1, 3, 2, 1\)"):
        ClassImages.from_list(
            ["a", "b"], [np.zeros((1, 2, 2, 1)), np.zeros((1, 3, 2, 1))]
        )
    with pytest.raises(ValueError, match="class 'b' has 0"):
        ClassImages.from_list(
            ["a", "b"], [np.zeros((1, 2, 2, 1)), np.zeros((0, 2, 2, 1))]
        )
    with pytest.raises(ValueError, match=r"duplicates \['a'\]"):
        ClassImages.from_list(["a", "a"], [np.zeros((1, 2, 2, 1))] * 2)


def test_constructor_validates_offsets():
    images = np.zeros((3, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="end at total_images = 3"):
        ClassImages(images, np.array([0, 2]), ("a",))
    with pytest.raises(ValueError, match="2 entries for 1 class names"):
        ClassImages(images, np.array([0, 1, 3]), ("a",))
    with pytest.raises(TypeError, match="float32"):
        ClassImages(images.astype(np.float64), np.array([0, 3]), ("a",))
