"""Noisy task distributions, for studying robustness of task weighting."""

from __future__ import annotations

import tensorflow as tf

from tfmeta.data.episodes import Episode


def shuffle_task_labels(
    dataset: tf.data.Dataset, fraction: float, seed: int, start_episode: int = 0
) -> tf.data.Dataset:
    """Corrupts about ``fraction`` of the tasks of an episode stream.

    A corrupted task has its support labels and its query labels each shuffled
    across examples (independent random permutations), so labels no longer
    match images and its adaptation and query loss are noise. Task i of batch
    e (task number t = e * B + i) is corrupted when a stateless uniform draw
    seeded by (seed, t) is below ``fraction``: deterministic and resumable
    like the stream itself (give the stream's ``start_episode``).

    Returns the stream with the same element structure (``Episode`` batches
    ``[B, ...]``).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction of noisy tasks must be in [0, 1], got {fraction}")
    if fraction == 0.0:
        return dataset

    def corrupt(episode_index, episode):
        batch = episode.support_y.shape[0]
        tasks = tf.cast(episode_index, tf.int64) * batch + tf.range(
            batch, dtype=tf.int64
        )

        def one(task, support_y, query_y):
            task_seed = tf.stack([tf.constant(seed, tf.int64), task])
            coin, support_seed, query_seed = tf.unstack(
                tf.random.experimental.stateless_split(task_seed, 3)
            )
            noisy = tf.random.stateless_uniform([], seed=coin) < fraction
            shuffled_support = tf.random.experimental.stateless_shuffle(
                support_y, seed=support_seed
            )
            shuffled_query = tf.random.experimental.stateless_shuffle(
                query_y, seed=query_seed
            )
            return (
                tf.where(noisy, shuffled_support, support_y),
                tf.where(noisy, shuffled_query, query_y),
            )

        support_y, query_y = tf.map_fn(
            lambda args: one(*args),
            (tasks, episode.support_y, episode.query_y),
            fn_output_signature=(episode.support_y.dtype, episode.query_y.dtype),
        )
        return Episode(episode.support_x, support_y, episode.query_x, query_y)

    return dataset.enumerate(start=start_episode).map(corrupt)
