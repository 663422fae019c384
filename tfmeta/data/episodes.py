"""N-way K-shot Q-query classification episodes as a `tf.data.Dataset`.

Sampling is counter-based and stateless: task number `t` (0, 1, 2, ...) is
drawn with stateless random ops seeded by `(seed, t)` alone, and batch `e`
holds tasks `e * meta_batch_size ... (e + 1) * meta_batch_size - 1`. The same
seed therefore gives the same tasks on every run and for every algorithm, and
training resumes at batch `s` with `start_episode=s` instead of replaying the
`s` batches before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfmeta.data.augment import check_strength, distort
from tfmeta.data.class_images import ClassImages


class Episode(NamedTuple):
    """A batch of tasks (a meta-batch), B = meta_batch_size.

    Classification: `support_x` `[B, N*K, H, W, C]` float32, `support_y`
    `[B, N*K]` int32, `query_x` `[B, N*Q, H, W, C]`, `query_y` `[B, N*Q]`
    int32; labels in [0, N), class-major (`[0] * K + [1] * K + ...`). Feature
    vectors (`ClassImages` of shape `[total, d]`) give `[B, N*K, d]`.
    Regression (sinusoid): `support_x`, `support_y` `[B, K, 1]` and
    `query_x`, `query_y` `[B, Q, 1]`, all float32.
    """

    support_x: tf.Tensor
    support_y: tf.Tensor
    query_x: tf.Tensor
    query_y: tf.Tensor


def _check_int(name: str, value: object, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_episode_spec(
    classes: ClassImages,
    n_way: int,
    k_shot: int,
    q_query: int,
    rotations: bool = False,
    class_groups: Sequence[str] | None = None,
) -> None:
    """Raises ValueError when `classes` cannot give N-way K-shot Q-query tasks.

    Checks, before any work: n_way, k_shot, q_query >= 1; n_way <= the
    classes available (num_classes, times 4 with rotations), and with
    `class_groups` (one group name per class) <= those of the largest group;
    k_shot + q_query <= the images of every class; square images when rotating.
    """
    n_way = _check_int("n_way", n_way, 1)
    k_shot = _check_int("k_shot", k_shot, 1)
    q_query = _check_int("q_query", q_query, 1)
    available = classes.num_classes * (4 if rotations else 1)
    if n_way > available:
        how = f" ({classes.num_classes} classes x 4 rotations)" if rotations else ""
        raise ValueError(
            f"n_way={n_way} is larger than the {available} classes available{how}; "
            f"expected n_way <= {available}."
        )
    if class_groups is not None:
        _check_groups(classes, class_groups, n_way, rotations)
    counts = classes.images_per_class
    fewest = int(np.argmin(counts))
    if k_shot + q_query > counts[fewest]:
        raise ValueError(
            f"k_shot + q_query = {k_shot} + {q_query} = {k_shot + q_query} distinct images "
            f"per class are needed, but class {classes.class_names[fewest]!r} has only "
            f"{counts[fewest]}; expected k_shot + q_query <= {counts[fewest]}."
        )
    shape = classes.image_shape  # (H, W, C), or (d,) for feature vectors
    if rotations and (len(shape) != 3 or shape[0] != shape[1]):
        raise ValueError(
            f"rotations=True needs square images, got image shape {classes.image_shape}."
        )


def _check_groups(
    classes: ClassImages, class_groups: Sequence[str], n_way: int, rotations: bool
) -> None:
    if len(class_groups) != classes.num_classes:
        raise ValueError(
            f"class_groups must name one group per class, got {len(class_groups)} "
            f"for {classes.num_classes} classes."
        )
    names, sizes = np.unique(np.asarray(class_groups, dtype=str), return_counts=True)
    largest = int(np.argmax(sizes))
    available = int(sizes[largest]) * (4 if rotations else 1)
    if n_way > available:
        how = f" ({sizes[largest]} classes x 4 rotations)" if rotations else ""
        raise ValueError(
            f"n_way={n_way} classes from one group need a group of >= {n_way} classes; "
            f"the largest, {str(names[largest])!r}, has {available}{how}; expected "
            f"n_way <= {available}."
        )


def _virtual_groups(
    class_groups: Sequence[str], n_way: int, rotations: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Group index of each virtual class, and whether its group has >= n_way of them."""
    _, group_of_class = np.unique(
        np.asarray(class_groups, dtype=str), return_inverse=True
    )
    # Virtual class v is class v // 4 rotated (rotations): the group of its class.
    group = np.repeat(group_of_class, 4) if rotations else group_of_class
    eligible = np.bincount(group)[group] >= n_way
    return group.astype(np.int64), eligible


def _task_seed(seed: tf.Tensor, task_index) -> tf.Tensor:
    """Task ``task_index``'s seed: (seed, task_index), all it depends on."""
    return tf.stack([seed, tf.cast(task_index, tf.int64)])


def _task_seeds(task_seed: tf.Tensor, grouped: bool) -> list[tf.Tensor]:
    """The seeds split from a task's: the group's (when ``grouped``), the
    classes' and the images'."""
    return tf.unstack(
        tf.random.experimental.stateless_split(task_seed, 3 if grouped else 2)
    )


def _task_group(group_seed: tf.Tensor, group: tf.Tensor, eligible: tf.Tensor):
    """A task's group index: that of a virtual class drawn uniformly among
    the groups of >= n_way (``eligible``), i.e. a group drawn with
    probability proportional to its classes; the task then takes classes of
    that group only."""
    group_scores = tf.random.stateless_uniform(tf.shape(group), seed=group_seed)
    return tf.gather(group, tf.argmax(tf.where(eligible, group_scores, -1.0)))


def task_groups(
    class_groups: Sequence[str],
    n_way: int,
    seed: int,
    num_tasks: int,
    rotations: bool = False,
) -> list[str]:
    """The group (e.g. alphabet) of tasks 0 .. ``num_tasks`` - 1 of
    ``episode_dataset(..., seed=seed, class_groups=class_groups)``, in the
    order the dataset yields them, computed by the same draw without
    building any episode."""
    names = np.unique(np.asarray(class_groups, dtype=str))
    group, eligible = (
        tf.constant(a) for a in _virtual_groups(class_groups, n_way, rotations)
    )
    seed = tf.constant(seed, tf.int64)

    def one(task_index):
        group_seed = _task_seeds(_task_seed(seed, task_index), grouped=True)[0]
        return _task_group(group_seed, group, eligible)

    indices = tf.range(num_tasks, dtype=tf.int64)
    drawn = tf.map_fn(one, indices, fn_output_signature=tf.int64)
    return [str(names[i]) for i in drawn.numpy()]


def _task_sampler(
    classes: ClassImages,
    n_way: int,
    k_shot: int,
    q_query: int,
    seed: int,
    rotations: bool,
    class_groups: Sequence[str] | None = None,
    augment: float = 0.0,
):
    """Returns `sample(t) -> Episode` of one task (no batch axis), t an int64 scalar."""
    images = tf.constant(classes.images)  # [total_images, H, W, C], held once.
    offsets = tf.constant(classes.class_offsets[:-1])  # int64 [num_classes]
    counts = tf.constant(classes.images_per_class)  # int64 [num_classes]
    max_count = int(classes.images_per_class.max())
    num_virtual = classes.num_classes * (4 if rotations else 1)
    per_class = k_shot + q_query
    image_shape = classes.image_shape
    seed = tf.constant(seed, tf.int64)
    if class_groups is not None:
        group, eligible = (
            tf.constant(a) for a in _virtual_groups(class_groups, n_way, rotations)
        )

    def sample(task_index: tf.Tensor) -> Episode:
        task_seed = _task_seed(seed, task_index)
        if class_groups is None:
            class_seed, image_seed = _task_seeds(task_seed, grouped=False)
        else:
            group_seed, class_seed, image_seed = _task_seeds(task_seed, grouped=True)
        # n_way distinct (virtual) classes in random order; label j <-> chosen[j].
        class_scores = tf.random.stateless_uniform([num_virtual], seed=class_seed)
        if class_groups is not None:
            in_group = tf.equal(group, _task_group(group_seed, group, eligible))
            class_scores = tf.where(in_group, class_scores, -1.0)
        chosen = tf.cast(tf.math.top_k(class_scores, k=n_way).indices, tf.int64)  # [N]
        base = chosen // 4 if rotations else chosen
        # K + Q distinct images per class among its counts[base] images.
        image_scores = tf.random.stateless_uniform([n_way, max_count], seed=image_seed)
        valid = (
            tf.range(max_count, dtype=tf.int64)[tf.newaxis, :]
            < tf.gather(counts, base)[:, tf.newaxis]
        )
        image_scores = tf.where(valid, image_scores, -1.0)
        picks = tf.cast(
            tf.math.top_k(image_scores, k=per_class).indices, tf.int64
        )  # [N, K+Q]
        x = tf.gather(images, tf.gather(offsets, base)[:, tf.newaxis] + picks)
        if rotations:
            flat = tf.reshape(x, [n_way * per_class, *image_shape])
            # [4, N*(K+Q), H, W, C]: every image rotated by 0, 90, 180, 270 degrees.
            rotated = tf.stack([tf.image.rot90(flat, k) for k in range(4)])
            quarter_turns = tf.repeat(chosen % 4, per_class)
            position = tf.range(n_way * per_class, dtype=tf.int64)
            flat = tf.gather_nd(rotated, tf.stack([quarter_turns, position], axis=1))
            x = tf.reshape(flat, [n_way, per_class, *image_shape])
        if augment:
            # Its own stream: the classes and images drawn do not change.
            distort_seed = tf.random.experimental.stateless_fold_in(task_seed, 1)
            flat = tf.reshape(x, [n_way * per_class, *image_shape])
            x = tf.reshape(
                distort(flat, distort_seed, augment), [n_way, per_class, *image_shape]
            )
        labels = tf.range(n_way, dtype=tf.int32)
        return Episode(
            support_x=tf.reshape(x[:, :k_shot], [n_way * k_shot, *image_shape]),
            support_y=tf.repeat(labels, k_shot),
            query_x=tf.reshape(x[:, k_shot:], [n_way * q_query, *image_shape]),
            query_y=tf.repeat(labels, q_query),
        )

    return sample


def task_index_dataset(
    meta_batch_size: int, start_episode: int = 0, num_episodes: int | None = None
) -> tf.data.Dataset:
    """int64 task numbers from `start_episode * meta_batch_size`, infinite if no num_episodes."""
    meta_batch_size = _check_int("meta_batch_size", meta_batch_size, 1)
    start_episode = _check_int("start_episode", start_episode, 0)
    first = start_episode * meta_batch_size
    if num_episodes is None:
        return tf.data.Dataset.counter(start=first)
    num_episodes = _check_int("num_episodes", num_episodes, 1)
    return tf.data.Dataset.range(first, first + num_episodes * meta_batch_size)


def batch_tasks(
    task_indices: tf.data.Dataset, sample, meta_batch_size: int, prefetch: bool
) -> tf.data.Dataset:
    """Maps `sample` over task numbers in order and stacks meta-batches."""
    dataset = task_indices.map(
        sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    dataset = dataset.batch(meta_batch_size, drop_remainder=True)
    if prefetch:
        dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def episode_dataset(
    classes: ClassImages,
    n_way: int,
    k_shot: int,
    q_query: int,
    meta_batch_size: int,
    seed: int,
    rotations: bool = False,
    start_episode: int = 0,
    num_episodes: int | None = None,
    prefetch: bool = True,
    class_groups: Sequence[str] | None = None,
    augment: float = 0.0,
) -> tf.data.Dataset:
    """Meta-batches of N-way K-shot Q-query tasks drawn from `classes`.

    Task `t` picks `n_way` distinct classes uniformly (with `rotations`, among
    `4 * num_classes` virtual classes: `v` is class `v // 4` rotated
    counter-clockwise by `(v % 4) * 90` degrees with `tf.image.rot90`, a new
    class for each rotation, as in the MAML paper's Omniglot setup), labels
    them 0..N-1 in that random order, then picks `k_shot + q_query` distinct
    images per class uniformly: the first `k_shot` are support, the rest query.

    With `class_groups` (e.g. the alphabet of each Omniglot character) the
    `n_way` classes of a task come from one group (rotations of its classes
    included), drawn among the groups of at least `n_way` (virtual) classes
    with probability proportional to their classes, so that every class of
    those groups is equally likely to be in a task (as without groups); only
    which classes meet in a task changes.

    Args:
      classes: the class images (held once in a tensor).
      n_way: N, classes per task.
      k_shot: K, support images per class.
      q_query: Q, query images per class.
      meta_batch_size: B, tasks per element.
      seed: integer; with the task number `t` the only source of randomness.
      rotations: add the 90/180/270 degree rotations as new classes.
      start_episode: first batch; batch `s` of a run from 0 equals the first
        batch of a run from `s`.
      num_episodes: number of batches, or None for an infinite dataset.
      prefetch: prefetch batches with `tf.data.AUTOTUNE`.
      class_groups: None, or one group name per class: tasks within one group.
      augment: strength of a random affine distortion of every image
        (`tfmeta.data.augment`; 0: none), seeded by the task.

    Returns:
      A dataset of `Episode` with fully static shapes: `support_x`
      `[B, N*K, H, W, C]` float32, `support_y` `[B, N*K]` int32, `query_x`
      `[B, N*Q, H, W, C]`, `query_y` `[B, N*Q]` int32.
    """
    check_episode_spec(classes, n_way, k_shot, q_query, rotations, class_groups)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    task_indices = task_index_dataset(meta_batch_size, start_episode, num_episodes)
    check_strength(augment)
    sample = _task_sampler(
        classes, n_way, k_shot, q_query, int(seed), rotations, class_groups, augment
    )
    return batch_tasks(task_indices, sample, meta_batch_size, prefetch)
