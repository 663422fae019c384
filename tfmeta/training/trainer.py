"""The meta-training loop: steps, checkpoints, summaries, meta-validation.

A run is resumable and a resumed run equals an uninterrupted one: the step is
the outer optimizer's iteration count, saved with theta and the optimizer
state; the episode stream is counter-based, so ``train_episodes(start_step)``
continues the same data order; and the run state that decides the rest of the
run (best value and step, validation history, training time: ``RunState``) is
saved in every checkpoint. At a step with a meta-validation the validation
runs first and the checkpoint after it, then best/ (see ``resume`` for what a
crash between them leaves and how it is repaired). A non-finite loss stops
the run before anything is saved, so the last good checkpoint survives.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from tfmeta.training import recovery
from tfmeta.training.checkpoints import (
    CheckpointError,
    learner_root,
    restore_model_and_optimizer,
)
from tfmeta.training.evaluation import evaluate, format_result
from tfmeta.training.learner import Learner
from tfmeta.training.run_state import RunState
from tfmeta.training.workdir import Workdir


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
      workdir: the run's folder (``Workdir``, or its path): latest checkpoints,
        the best ones by meta-validation, summaries, validation history.
      train_episodes: ``start_step -> iterable of task batches`` from that step on.
      val_episodes: ``() -> finite iterable`` of fixed validation task batches, or None.
      log_every, eval_every, checkpoint_every: steps between log lines,
        meta-validations and checkpoints (a meta-validation also saves one).
      max_to_keep: latest checkpoints kept, when ``workdir`` is a path.
      events: called with (event, step) at "trained" (after a meta-step),
        "validated" (before its checkpoint), "saved" (the latest checkpoint
        written) and "best_saved"; for tests that stop a run at those points.
    """

    def __init__(
        self,
        learner: Learner,
        workdir: str | Workdir,
        train_episodes: Callable[[int], Iterable],
        val_episodes: Callable[[], Iterable] | None = None,
        *,
        log_every: int = 50,
        eval_every: int = 500,
        checkpoint_every: int = 500,
        max_to_keep: int = 3,
        print_fn: Callable[[str], None] = print,
        events: Callable[[str, int], None] | None = None,
    ):
        self.learner = learner
        self.workdir = (
            workdir if isinstance(workdir, Workdir) else Workdir(workdir, max_to_keep)
        )
        self.train_episodes = train_episodes
        self.val_episodes = val_episodes
        self.log_every = max(1, log_every)
        self.eval_every = max(1, eval_every)
        self.checkpoint_every = max(1, checkpoint_every)
        self.print = print_fn
        self.events = events or (lambda event, step: None)
        self.state = RunState(higher_is_better=learner.metric_name == "accuracy")
        self.checkpoint = learner_root(
            learner.model,
            learner.outer_optimizer,
            getattr(learner, "saved_variables", ()),
            **self.state.variables(),
        )
        self._resumed = False
        self._legacy = False
        self._writers: dict[str, Any] = {}

    @property
    def step(self) -> int:
        return int(self.learner.outer_optimizer.iterations.numpy())

    def _restore_path(self, path: str) -> None:
        restore_model_and_optimizer(
            path,
            self.learner.model,
            self.learner.outer_optimizer,
            getattr(self.learner, "saved_variables", ()),
        )
        self._legacy = not self.state.restore(path)

    def restore(self, which: str = "latest") -> str | None:
        """Restores theta, the optimizer and the run state from the newest intact
        "latest" or "best" checkpoint; returns its path (None: no checkpoint).
        Writes nothing."""
        return self.workdir.restore(self._restore_path, which, self.print)

    def resume(self) -> int:
        """Restores the newest intact latest checkpoint and makes the workdir agree
        with it; returns its step (0 for a new run). Holds the workdir's lock.

        Raises CheckpointError, before writing anything, when checkpoints exist
        but none restores. Then (``recovery``): damaged newer checkpoints are
        moved aside, the state file is rebuilt from the files, best/
        checkpoints newer than the restored step are removed, a best
        checkpoint that a crash kept from being saved is saved, and the views
        (validation.json, timing.json) are rewritten from the state.
        """
        with self.workdir.locked():
            latest = self.workdir.latest
            state_problem = latest.state_problem()
            step = latest.restore_newest(self._restore_path, self.print)
            if step is None:
                if self.workdir.best.steps():
                    raise CheckpointError(
                        f"{self.workdir.best.directory} holds checkpoints but "
                        f"{latest.directory} none: restore them or use a new workdir"
                    )
                self.workdir.announce_holder()
                self._resumed = True
                return 0
            self.workdir.announce_holder()
            recovery.move_damaged_aside(self.workdir, step, self.print)
            if state_problem:
                self.print(
                    f"the checkpoint state file in {latest.directory} was {state_problem}: "
                    "rebuilt from the checkpoint files"
                )
            latest.write_state()
            if self._legacy:
                recovery.adopt_older_state(self.workdir, self.state, step, self.print)
            recovery.repair_best(
                self.workdir, self.state, self.checkpoint, step, self.print
            )
            self._write_views(step)
            self.print(f"resumed from {latest.path(step)} at step {step}")
            self._resumed = True
            return step

    def _write_views(self, step: int) -> None:
        has_history = bool(self.state.history) or self.val_episodes is not None
        recovery.write_views(self.workdir, self.state, step, has_history)

    def _validation_due(self, step: int, num_steps: int) -> bool:
        return self.val_episodes is not None and (
            step % self.eval_every == 0 or step == num_steps
        )

    def _writer(self, name: str):
        """The summary writer of ``name`` ("train", "val"), made on first use."""
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(
                self.workdir.summaries(name)
            )
        return self._writers[name]

    def _validate(self, step: int) -> bool:
        result = evaluate(self.learner, self.val_episodes())
        result["step"] = step
        with self._writer("val").as_default(step=step):
            tf.summary.scalar(result["metric"], result["mean"])
            tf.summary.scalar("loss", result["loss"])
        improved = self.state.record(result)
        self.print(
            f"step {step}: meta-validation {format_result(result)}{' (best)' if improved else ''}"
        )
        self.events("validated", step)
        return improved

    def _save(self, step: int, improved: bool, seconds: float) -> None:
        """The latest checkpoint, then best/ if ``improved``, then the views."""
        self.state.train_seconds.assign(seconds)
        self.workdir.latest.save(self.checkpoint, step)
        self.events("saved", step)
        if improved:
            self.workdir.best.save(self.checkpoint, step)
            self.events("best_saved", step)
        self._write_views(step)

    def train(self, num_steps: int) -> dict[str, Any]:
        """Meta-trains from the newest intact checkpoint (if any) to ``num_steps``."""
        with self.workdir.locked():
            return self._train(num_steps)

    def _train(self, num_steps: int) -> dict[str, Any]:
        if not self._resumed:
            self.resume()
        start = self.step
        previous_seconds = float(self.state.train_seconds.numpy())
        run_start = time.perf_counter()

        def seconds() -> float:  # cumulative training time, over every process
            return previous_seconds + time.perf_counter() - run_start

        history_steps = {entry["step"] for entry in self.state.history}
        if (
            start
            and self._validation_due(start, num_steps)
            and start not in history_steps
        ):
            # A checkpoint of an earlier version, saved before its validation.
            self._save(start, self._validate(start), seconds())
        if start >= num_steps:
            if not self.workdir.latest.steps():
                # num_steps=0 on a new run (theta as built, e.g. a pretrained
                # backbone or a learner that is not meta-trained): its
                # meta-validation and the step-0 checkpoint that evaluation,
                # export and a longer rerun read.
                validate = self._validation_due(start, num_steps)
                self._save(start, self._validate(start) if validate else False, 0.0)
                for writer in self._writers.values():
                    writer.flush()
                self.print(f"num_steps {num_steps}: saved theta at step {start}")
                return {"step": start, "train_seconds": previous_seconds}
            self.print(
                f"already at step {start} >= num_steps {num_steps}; nothing to train"
            )
            return {"step": start, "train_seconds": previous_seconds}
        train_writer = self._writer("train")
        metric = self.learner.metric_name
        window_start, window_steps = time.perf_counter(), 0
        sums = {"loss": 0.0, metric: 0.0}
        last = {}
        episodes = iter(self.train_episodes(start))
        for step in range(start, num_steps):
            out = self.learner.meta_train_step(next(episodes))
            loss, norm = float(out["loss"]), float(out["meta_gradient_norm"])
            if not (math.isfinite(loss) and math.isfinite(norm)):
                kept = self.workdir.latest.steps()
                message = (
                    f"non-finite loss {loss} (meta-gradient norm {norm}) at step {step}; "
                    "stopping. The last good checkpoint is kept: "
                    f"{self.workdir.latest.path(kept[0]) if kept else 'none yet'}. "
                    "Lower outer_lr or inner_lr and rerun to resume from it."
                )
                logging.error(message)
                raise NonFiniteLossError(message)
            done = step + 1
            self.events("trained", done)
            sums["loss"] += loss
            sums[metric] += float(out[metric])
            weights = out["task_weights"].numpy()
            with train_writer.as_default(step=done):
                tf.summary.scalar("task_weights/min", float(np.min(weights)))
                tf.summary.scalar("task_weights/max", float(np.max(weights)))
            window_steps += 1
            if done % self.log_every == 0 or done == num_steps:
                elapsed = time.perf_counter() - window_start
                rate = window_steps / max(elapsed, 1e-9)
                last = {key: value / window_steps for key, value in sums.items()}
                with train_writer.as_default(step=done):
                    tf.summary.scalar("loss", last["loss"])
                    tf.summary.scalar(metric, last[metric])
                    tf.summary.scalar("steps_per_second", rate)
                    tf.summary.scalar("meta_gradient_norm", norm)
                    tf.summary.histogram("task_weights", weights)
                eta = (num_steps - done) / max(rate, 1e-9)
                self.print(
                    f"step {done}/{num_steps}: loss {last['loss']:.4f} {metric} {last[metric]:.4f} "
                    f"{rate:.2f} steps/s ETA {_format_duration(eta)}"
                )
                sums = {key: 0.0 for key in sums}
                window_start, window_steps = time.perf_counter(), 0
            validate = self._validation_due(done, num_steps)
            improved = self._validate(done) if validate else False
            if validate or done % self.checkpoint_every == 0 or done == num_steps:
                self._save(done, improved, seconds())
        for writer in self._writers.values():
            writer.flush()
        return {"step": self.step, "train_seconds": seconds(), **last}
