"""The MAML paper's sinusoid regression tasks (Finn et al., 2017, section 5.1).

Task `t` is `y = amplitude * sin(x - phase)` (the MAML code's convention) with
amplitude and phase uniform in their ranges and `x` uniform in `x_range`;
`k_shot` points form the support set and `q_query` other points the query
set. Seeding is the counter-based scheme of `episodes.episode_dataset`: task
`t` depends on `(seed, t)` only, and `start_episode=s` resumes at batch `s`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfmeta.data.episodes import Episode, _check_int, batch_tasks, task_index_dataset


def sinusoid_function(amplitude, phase, x):
    """`amplitude * sin(x - phase)` with numpy broadcasting, for plots and tests."""
    return np.asarray(amplitude) * np.sin(np.asarray(x) - np.asarray(phase))


def _check_range(name: str, value: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(
            f"{name} must be finite (low, high) with low <= high, got {value!r}."
        )
    return low, high


def _task_seeds(seed: int, task_index: tf.Tensor) -> tf.Tensor:
    """int64 [3, 2] seeds of task `task_index`: amplitude, phase and x."""
    task_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(task_index, tf.int64)])
    return tf.random.experimental.stateless_split(task_seed, 3)


def _parameters(
    seeds: tf.Tensor, amplitude_range, phase_range
) -> tuple[tf.Tensor, tf.Tensor]:
    amplitude = tf.random.stateless_uniform(
        [], seeds[0], minval=amplitude_range[0], maxval=amplitude_range[1]
    )
    phase = tf.random.stateless_uniform(
        [], seeds[1], minval=phase_range[0], maxval=phase_range[1]
    )
    return amplitude, phase


def sinusoid_task_parameters(
    seed: int,
    task_indices: Sequence[int] | np.ndarray,
    amplitude_range: Sequence[float] = (0.1, 5.0),
    phase_range: Sequence[float] = (0.0, np.pi),
) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes and phases float32 `[len(task_indices)]` of the given tasks.

    Batch `e` of `sinusoid_dataset` holds tasks
    `e * meta_batch_size ... (e + 1) * meta_batch_size - 1`.
    """
    amplitude_range = _check_range("amplitude_range", amplitude_range)
    phase_range = _check_range("phase_range", phase_range)
    pairs = [
        _parameters(_task_seeds(seed, t), amplitude_range, phase_range)
        for t in np.asarray(task_indices, np.int64).reshape(-1)
    ]
    amplitudes = np.array([float(a) for a, _ in pairs], np.float32)
    phases = np.array([float(p) for _, p in pairs], np.float32)
    return amplitudes, phases


def sinusoid_dataset(
    k_shot: int,
    q_query: int,
    meta_batch_size: int,
    seed: int,
    start_episode: int = 0,
    num_episodes: int | None = None,
    amplitude_range: Sequence[float] = (0.1, 5.0),
    phase_range: Sequence[float] = (0.0, np.pi),
    x_range: Sequence[float] = (-5.0, 5.0),
) -> tf.data.Dataset:
    """Meta-batches of sinusoid regression tasks.

    Args:
      k_shot: K, support points per task.
      q_query: Q, query points per task.
      meta_batch_size: B, tasks per element.
      seed: integer; with the task number the only source of randomness.
      start_episode: first batch (see `episodes.episode_dataset`).
      num_episodes: number of batches, or None for an infinite dataset.
      amplitude_range, phase_range, x_range: `[low, high)` of the uniform
        amplitude, phase and inputs (defaults: the MAML paper's).

    Returns:
      A dataset of `Episode`: `support_x`, `support_y` `[B, K, 1]` and
      `query_x`, `query_y` `[B, Q, 1]`, all float32, with
      `y = amplitude * sin(x - phase)` per task (see
      `sinusoid_task_parameters`).
    """
    k_shot = _check_int("k_shot", k_shot, 1)
    q_query = _check_int("q_query", q_query, 1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    seed = int(seed)
    amplitude_range = _check_range("amplitude_range", amplitude_range)
    phase_range = _check_range("phase_range", phase_range)
    x_range = _check_range("x_range", x_range)
    task_indices = task_index_dataset(meta_batch_size, start_episode, num_episodes)

    def sample(task_index: tf.Tensor) -> Episode:
        seeds = _task_seeds(seed, task_index)
        amplitude, phase = _parameters(seeds, amplitude_range, phase_range)
        x = tf.random.stateless_uniform(
            [k_shot + q_query, 1], seeds[2], minval=x_range[0], maxval=x_range[1]
        )
        y = amplitude * tf.sin(x - phase)
        return Episode(x[:k_shot], y[:k_shot], x[k_shot:], y[k_shot:])

    return batch_tasks(task_indices, sample, meta_batch_size, prefetch=True)
