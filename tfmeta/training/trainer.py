"""The meta-training loop: steps, checkpoints, summaries, meta-validation.

A run is resumable: the step is the outer optimizer's iteration count, saved
with theta and the optimizer state; the episode stream is counter-based, so
``train_episodes(start_step)`` continues the same data order. A non-finite loss
stops the run before anything is saved, so the last good checkpoint survives.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfmeta.core.learner import Learner
from tfmeta.training.evaluation import evaluate, format_result
from tfmeta.training.workdir import write_json


class NonFiniteLossError(RuntimeError):
    """Raised when a meta-train step produces a NaN or infinite loss."""


def _format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Trainer:
    """Runs ``learner.meta_train_step`` until ``num_steps`` and owns the checkpoints.

    Args:
      learner: the meta-learner (its model and outer optimizer are checkpointed).
      workdir: checkpoints in ``<workdir>/checkpoints`` (latest), the best by
        meta-validation in ``<workdir>/best``, summaries in ``<workdir>/train``
        and ``<workdir>/val``, validation history in ``<workdir>/validation.json``.
      train_episodes: ``start_step -> iterable of task batches`` from that step on.
      val_episodes: ``() -> finite iterable`` of fixed validation task batches, or None.
    """

    def __init__(
        self,
        learner: Learner,
        workdir: str,
        train_episodes: Callable[[int], Iterable],
        val_episodes: Callable[[], Iterable] | None = None,
        *,
        log_every: int = 50,
        eval_every: int = 500,
        checkpoint_every: int = 500,
        max_to_keep: int = 3,
        print_fn: Callable[[str], None] = print,
    ):
        self.learner = learner
        self.workdir = workdir
        self.train_episodes = train_episodes
        self.val_episodes = val_episodes
        self.log_every = max(1, log_every)
        self.eval_every = max(1, eval_every)
        self.checkpoint_every = max(1, checkpoint_every)
        self.print = print_fn
        self.higher_is_better = learner.metric_name == "accuracy"
        self.best_value = tf.Variable(
            -math.inf if self.higher_is_better else math.inf, dtype=tf.float64
        )
        self.checkpoint = tf.train.Checkpoint(
            model_variables=[v.value for v in learner.model.variables],
            optimizer=learner.outer_optimizer,
            best_value=self.best_value,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(workdir, "checkpoints"),
            max_to_keep=max_to_keep,
        )
        self.best_manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(workdir, "best"), max_to_keep=1
        )
        self.history_path = os.path.join(workdir, "validation.json")
        self.timing_path = os.path.join(workdir, "timing.json")

    def _save(self, train_seconds: float) -> None:
        """Saves the latest checkpoint and the cumulative training time up to it."""
        self.manager.save(checkpoint_number=self.step)
        write_json(
            self.timing_path,
            {"step": self.step, "train_seconds": round(train_seconds, 1)},
        )

    def _previous_seconds(self) -> float:
        if not os.path.exists(self.timing_path):
            return 0.0
        with open(self.timing_path) as f:
            timing = json.load(f)
        return (
            float(timing["train_seconds"]) if timing.get("step") == self.step else 0.0
        )

    @property
    def step(self) -> int:
        return int(self.learner.outer_optimizer.iterations.numpy())

    def restore(self, which: str = "latest") -> str | None:
        """Restores the "latest" or "best" checkpoint if one exists; returns its path."""
        manager = self.best_manager if which == "best" else self.manager
        path = manager.latest_checkpoint
        if path:
            self.checkpoint.restore(path).expect_partial()
        return path

    def _validation_missing(self, step: int, num_steps: int) -> bool:
        """Whether a meta-validation was due at ``step`` and none was recorded."""
        if self.val_episodes is None or step == 0:
            return False
        if step % self.eval_every and step != num_steps:
            return False
        history = []
        if os.path.exists(self.history_path):
            with open(self.history_path) as f:
                history = json.load(f)
        return all(entry.get("step") != step for entry in history)

    def _validate(self, summary_writer) -> dict[str, Any]:
        result = evaluate(self.learner, self.val_episodes())
        result["step"] = self.step
        with summary_writer.as_default(step=self.step):
            tf.summary.scalar(result["metric"], result["mean"])
            tf.summary.scalar("loss", result["loss"])
        improved = (
            result["mean"] > self.best_value.numpy()
            if self.higher_is_better
            else result["mean"] < self.best_value.numpy()
        )
        if improved:
            self.best_value.assign(result["mean"])
            self.best_manager.save(checkpoint_number=self.step)
        history = []
        if os.path.exists(self.history_path):
            with open(self.history_path) as f:
                history = json.load(f)
        history.append({**result, "best": bool(improved)})
        write_json(self.history_path, history)
        self.print(
            f"step {self.step}: meta-validation {format_result(result)}{' (best)' if improved else ''}"
        )
        return result

    def train(self, num_steps: int) -> dict[str, Any]:
        """Meta-trains from the last checkpoint (if any) to ``num_steps``."""
        restored = self.restore()
        start = self.step
        if restored:
            self.print(f"resumed from {restored} at step {start}")
            if self._validation_missing(start, num_steps):
                # Interrupted between the checkpoint and its meta-validation.
                self._validate(
                    tf.summary.create_file_writer(os.path.join(self.workdir, "val"))
                )
        if start >= num_steps:
            self.print(
                f"already at step {start} >= num_steps {num_steps}; nothing to train"
            )
            return {"step": start}
        train_writer = tf.summary.create_file_writer(
            os.path.join(self.workdir, "train")
        )
        val_writer = tf.summary.create_file_writer(os.path.join(self.workdir, "val"))
        metric = self.learner.metric_name
        previous_seconds = self._previous_seconds()
        window_start, window_steps, run_start = (
            time.perf_counter(),
            0,
            time.perf_counter(),
        )
        sums = {"loss": 0.0, metric: 0.0}
        last = {}
        episodes = iter(self.train_episodes(start))
        for step in range(start, num_steps):
            out = self.learner.meta_train_step(next(episodes))
            loss = float(out["loss"])
            if not (
                math.isfinite(loss) and math.isfinite(float(out["meta_gradient_norm"]))
            ):
                message = (
                    f"non-finite loss {loss} (meta-gradient norm {float(out['meta_gradient_norm'])}) at step {step}; "
                    f"stopping. The last good checkpoint is kept: {self.manager.latest_checkpoint}. "
                    "Lower --outer_lr or --inner_lr and rerun to resume from it."
                )
                logging.error(message)
                raise NonFiniteLossError(message)
            sums["loss"] += loss
            sums[metric] += float(out[metric])
            weights = out["task_weights"].numpy()
            with train_writer.as_default(step=step + 1):
                tf.summary.scalar("task_weights/min", float(np.min(weights)))
                tf.summary.scalar("task_weights/max", float(np.max(weights)))
            window_steps += 1
            done = step + 1
            if done % self.log_every == 0 or done == num_steps:
                elapsed = time.perf_counter() - window_start
                rate = window_steps / max(elapsed, 1e-9)
                last = {key: value / window_steps for key, value in sums.items()}
                with train_writer.as_default(step=done):
                    tf.summary.scalar("loss", last["loss"])
                    tf.summary.scalar(metric, last[metric])
                    tf.summary.scalar("steps_per_second", rate)
                    tf.summary.scalar(
                        "meta_gradient_norm", float(out["meta_gradient_norm"])
                    )
                    tf.summary.histogram("task_weights", weights)
                eta = (num_steps - done) / max(rate, 1e-9)
                self.print(
                    f"step {done}/{num_steps}: loss {last['loss']:.4f} {metric} {last[metric]:.4f} "
                    f"{rate:.2f} steps/s ETA {_format_duration(eta)}"
                )
                sums = {key: 0.0 for key in sums}
                window_start, window_steps = time.perf_counter(), 0
            if done % self.checkpoint_every == 0 or done == num_steps:
                self._save(previous_seconds + time.perf_counter() - run_start)
            if self.val_episodes is not None and (
                done % self.eval_every == 0 or done == num_steps
            ):
                self._validate(val_writer)
        train_writer.flush()
        val_writer.flush()
        return {
            "step": self.step,
            "train_seconds": previous_seconds + time.perf_counter() - run_start,
            **last,
        }
