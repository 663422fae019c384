"""Tests of tfmeta.data.episodes on synthetic classes whose pixels encode their identity."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfmeta.data import (
    ClassImages,
    Episode,
    check_episode_spec,
    episode_dataset,
    task_groups,
)

COUNTS = [5, 6, 7, 5, 8, 6, 5]  # images per class: classes differ on purpose.


def _classes() -> ClassImages:
    """Image j of class c is [[c, j], [-1, -2]]: every rotation of it is distinct."""
    arrays = [
        np.array([[[c, j], [-1, -2]] for j in range(n)], np.float32)[..., None]
        for c, n in enumerate(COUNTS)
    ]
    return ClassImages.from_list([f"class{c}" for c in range(len(COUNTS))], arrays)


CLASSES = _classes()
# bytes of rot90(image j of class c, k) -> (c, j, k)
SOURCE = {
    np.rot90(CLASSES.images_of(c)[j], k).tobytes(): (c, j, k)
    for c in range(len(COUNTS))
    for j in range(COUNTS[c])
    for k in range(4)
}


def _identify(images: np.ndarray) -> list[tuple[int, int, int]]:
    return [SOURCE[np.ascontiguousarray(image).tobytes()] for image in images]


def _tasks(dataset):
    """Yields (support ids, support labels, query ids, query labels) per task."""
    for episode in dataset.as_numpy_iterator():
        for b in range(len(episode.support_x)):
            yield (
                _identify(episode.support_x[b]),
                episode.support_y[b],
                _identify(episode.query_x[b]),
                episode.query_y[b],
            )


def _check_task(task, n_way, k_shot, q_query, rotations):
    support, support_y, query, query_y = task
    np.testing.assert_array_equal(support_y, np.repeat(np.arange(n_way), k_shot))
    np.testing.assert_array_equal(query_y, np.repeat(np.arange(n_way), q_query))
    virtual_classes = []
    for label in range(n_way):
        images = (
            support[label * k_shot : (label + 1) * k_shot]
            + query[label * q_query : (label + 1) * q_query]
        )
        # One (class, rotation) per label, K + Q distinct images of it.
        assert len({(c, k) for c, _, k in images}) == 1
        assert len({j for _, j, _ in images}) == k_shot + q_query
        virtual_classes.append((images[0][0], images[0][2]))
        if not rotations:
            assert images[0][2] == 0
    assert len(set(virtual_classes)) == n_way
    return virtual_classes


def test_shapes_dtypes_and_static_spec():
    dataset = episode_dataset(
        CLASSES, n_way=3, k_shot=2, q_query=3, meta_batch_size=4, seed=0
    )
    assert dataset.element_spec == Episode(
        tf.TensorSpec([4, 6, 2, 2, 1], tf.float32),
        tf.TensorSpec([4, 6], tf.int32),
        tf.TensorSpec([4, 9, 2, 2, 1], tf.float32),
        tf.TensorSpec([4, 9], tf.int32),
    )
    assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY
    traces = []

    @tf.function
    def consume(episode):
        traces.append(1)
        return tf.reduce_sum(episode.query_x) + tf.cast(
            tf.reduce_sum(episode.support_y), tf.float32
        )

    for episode in dataset.take(3):
        consume(episode)
    assert len(traces) == 1


def test_every_task_has_k_support_and_q_query_distinct_images_per_label():
    dataset = episode_dataset(
        CLASSES, 4, 2, 3, meta_batch_size=5, seed=7, num_episodes=4
    )
    tasks = list(_tasks(dataset))
    assert len(tasks) == 20
    for task in tasks:
        _check_task(task, 4, 2, 3, rotations=False)


def test_classes_labels_and_images_are_uniform():
    # 3-way 1-shot 3-query over 7 classes, 600 tasks.
    dataset = episode_dataset(
        CLASSES, 3, 1, 3, meta_batch_size=50, seed=1, num_episodes=12
    )
    class_counts = collections.Counter()
    label0_counts = collections.Counter()
    image_counts = collections.Counter()
    for task in _tasks(dataset):
        classes = _check_task(task, 3, 1, 3, rotations=False)
        class_counts.update(c for c, _ in classes)
        label0_counts[classes[0][0]] += 1
        image_counts.update((c, j) for c, j, _ in task[0] + task[2])
    # Each class is in a task with probability 3/7 and gets label 0 with probability 1/7.
    for c in range(7):
        assert abs(class_counts[c] - 600 * 3 / 7) < 50, class_counts
        assert abs(label0_counts[c] - 600 / 7) < 30, label0_counts
        # Each of the COUNTS[c] images is drawn with probability 4 / COUNTS[c] given c.
        for j in range(COUNTS[c]):
            expected = class_counts[c] * 4 / COUNTS[c]
            assert abs(image_counts[(c, j)] - expected) < 0.25 * expected + 10, (c, j)


def _arrays(dataset):
    return [tuple(np.asarray(t) for t in e) for e in dataset.as_numpy_iterator()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_array_equal(u, v)


def test_deterministic_for_a_seed_different_across_seeds():
    make = lambda seed: episode_dataset(CLASSES, 3, 1, 2, 4, seed=seed, num_episodes=3)
    first, again, other = _arrays(make(5)), _arrays(make(5)), _arrays(make(6))
    _assert_same(first, again)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(first, other))


def test_start_episode_equals_skipping_and_num_episodes_bounds():
    make = lambda **kw: episode_dataset(
        CLASSES, 3, 2, 2, 3, seed=11, prefetch=False, **kw
    )
    full = make(num_episodes=5)
    assert full.cardinality() == 5 and len(_arrays(full)) == 5
    _assert_same(_arrays(make(start_episode=3, num_episodes=2)), _arrays(full.skip(3)))
    _assert_same(_arrays(make(start_episode=2).take(2)), _arrays(full.skip(2).take(2)))


def test_rotations_are_new_classes_of_rotated_images():
    # 28 virtual classes from 7: a 28-way task uses every class in all four rotations.
    dataset = episode_dataset(
        CLASSES, 28, 1, 1, 2, seed=3, rotations=True, num_episodes=1
    )
    for task in _tasks(dataset):
        virtual = _check_task(task, 28, 1, 1, rotations=True)
        assert sorted(virtual) == [(c, k) for c in range(7) for k in range(4)]
    episode = next(iter(episode_dataset(CLASSES, 2, 1, 1, 1, seed=0, rotations=True)))
    c, j, k = _identify(episode.support_x[0].numpy())[0]
    np.testing.assert_array_equal(
        episode.support_x[0, 0], tf.image.rot90(CLASSES.images_of(c)[j], k)
    )
    with pytest.raises(
        ValueError,
        match=r"n_way=29 is larger than the 28 classes available \(7 classes x 4 rotations\)",
    ):
        check_episode_spec(CLASSES, 29, 1, 1, rotations=True)


def test_check_episode_spec_errors_name_the_values():
    with pytest.raises(
        ValueError, match="n_way=8 is larger than the 7 classes available"
    ):
        episode_dataset(CLASSES, 8, 1, 1, 1, seed=0)
    with pytest.raises(
        ValueError, match=r"k_shot \+ q_query = 2 \+ 4 = 6 .* class 'class0' has only 5"
    ):
        check_episode_spec(CLASSES, 2, 2, 4)
    check_episode_spec(CLASSES, 7, 2, 3)  # 5 images are enough everywhere.
    for kwargs, name in [
        ((0, 1, 1), "n_way"),
        ((1, 0, 1), "k_shot"),
        ((1, 1, 0), "q_query"),
    ]:
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1, got 0"):
            check_episode_spec(CLASSES, *kwargs)
    with pytest.raises(
        ValueError, match="meta_batch_size must be an integer >= 1, got 0"
    ):
        episode_dataset(CLASSES, 2, 1, 1, 0, seed=0)
    with pytest.raises(ValueError, match="num_episodes must be an integer >= 1, got 0"):
        episode_dataset(CLASSES, 2, 1, 1, 1, seed=0, num_episodes=0)
    wide = ClassImages.from_list(["a"], [np.zeros((2, 2, 3, 1))])
    with pytest.raises(ValueError, match=r"square images, got image shape \(2, 3, 1\)"):
        check_episode_spec(wide, 1, 1, 1, rotations=True)


# --- tasks within one group (e.g. one Omniglot alphabet) --------------------------------

GROUPS = ("A", "B", "A", "B", "A", "C", "B")  # A: classes 0, 2, 4; B: 1, 3, 6; C: 5


def _group_tasks(rotations, num_episodes, seed=2):
    dataset = episode_dataset(
        CLASSES, 3, 1, 1, 40, seed=seed, rotations=rotations,
        num_episodes=num_episodes, class_groups=GROUPS,
    )  # fmt: skip
    for task in _tasks(dataset):
        virtual = _check_task(task, 3, 1, 1, rotations=rotations)
        groups = {GROUPS[c] for c, _ in virtual}
        assert len(groups) == 1, virtual  # every class of a task from one group
        yield groups.pop(), virtual


def test_tasks_within_a_group_draw_it_in_proportion_to_its_classes():
    # 3-way: C (1 class) cannot give a task; A and B (3 classes each) are
    # equally likely, and each task holds all three classes of its group.
    group_counts = collections.Counter()
    for group, virtual in _group_tasks(rotations=False, num_episodes=8):
        group_counts[group] += 1
        assert sorted(c for c, _ in virtual) == [
            c for c in range(7) if GROUPS[c] == group
        ]
    assert set(group_counts) == {"A", "B"}
    assert abs(group_counts["A"] - 160) < 40, group_counts
    # Rotations are classes of their character's group: A and B hold 12 virtual
    # classes, C 4, so C gives 4/28 of the tasks; each virtual class is in a
    # task with probability 3/28, as without groups.
    group_counts, virtual_counts = collections.Counter(), collections.Counter()
    for group, virtual in _group_tasks(rotations=True, num_episodes=14):
        group_counts[group] += 1
        virtual_counts.update(virtual)
    assert abs(group_counts["C"] - 560 * 4 / 28) < 30, group_counts
    assert len(virtual_counts) == 28
    for v, count in virtual_counts.items():
        assert abs(count - 560 * 3 / 28) < 25, (v, count)


@pytest.mark.parametrize("rotations", [False, True])
def test_task_groups_name_the_group_every_task_draws_from(rotations):
    # 8 batches of 40 tasks: both eligible groups and, with rotations, C too.
    drawn = [group for group, _ in _group_tasks(rotations, num_episodes=8, seed=3)]
    named = task_groups(GROUPS, 3, seed=3, num_tasks=320, rotations=rotations)
    assert named == drawn
    assert set(named) == ({"A", "B", "C"} if rotations else {"A", "B"})
    # Another seed names other tasks' groups.
    assert task_groups(GROUPS, 3, seed=4, num_tasks=320, rotations=rotations) != named


def test_tasks_within_a_group_are_fixed_by_the_seed():
    make = lambda seed, **kw: episode_dataset(
        CLASSES, 3, 1, 2, 4, seed=seed, rotations=True, class_groups=GROUPS,
        prefetch=False, **kw,
    )  # fmt: skip
    first = _arrays(make(5, num_episodes=4))
    _assert_same(first, _arrays(make(5, num_episodes=4)))
    _assert_same(first[2:], _arrays(make(5, start_episode=2, num_episodes=2)))
    other = _arrays(make(6, num_episodes=4))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(first, other))


def test_tasks_within_a_group_need_a_group_of_n_way_classes():
    with pytest.raises(
        ValueError,
        match=r"^n_way=4 classes from one group need a group of >= 4 classes; the "
        r"largest, 'A', has 3; expected n_way <= 3\.$",
    ):
        episode_dataset(CLASSES, 4, 1, 1, 1, seed=0, class_groups=GROUPS)
    with pytest.raises(
        ValueError,
        match=r"'A', has 12 \(3 classes x 4 rotations\); expected n_way <= 12",
    ):
        check_episode_spec(CLASSES, 13, 1, 1, rotations=True, class_groups=GROUPS)
    check_episode_spec(CLASSES, 12, 1, 1, rotations=True, class_groups=GROUPS)
    with pytest.raises(ValueError, match="one group per class, got 2 for 7 classes"):
        check_episode_spec(CLASSES, 2, 1, 1, class_groups=("A", "B"))
