"""The run state that decides a run's future besides theta and the optimizer.

The best meta-validation value and its step, the validation history and the
cumulative training time are tf.Variables saved in every checkpoint, so a
restore brings them back exactly as they were at that checkpoint's step,
whatever happened after it. ``validation.json`` and ``timing.json`` are views
of this state, rewritten from it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import tensorflow as tf

from tfmeta.training.files import finite_or_none

VERSION = 1  # 0: a checkpoint written before the state was saved (best_value only)


class RunState:
    """best_value, best_step, history and train_seconds, as checkpointable variables."""

    def __init__(self, higher_is_better: bool):
        self.higher_is_better = higher_is_better
        self.best_value = tf.Variable(self._worst, dtype=tf.float64, trainable=False)
        self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.history_json = tf.Variable("[]", dtype=tf.string, trainable=False)
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.version = tf.Variable(VERSION, dtype=tf.int64, trainable=False)

    @property
    def _worst(self) -> float:
        return -math.inf if self.higher_is_better else math.inf

    def variables(self) -> dict[str, tf.Variable]:
        """The checkpoint names of the state (``best_value`` as older checkpoints have it)."""
        return {
            "best_value": self.best_value,
            "best_step": self.best_step,
            "validation_history": self.history_json,
            "train_seconds": self.train_seconds,
            "run_state_version": self.version,
        }

    def reset(self) -> None:
        """The state of a run that has not started; a restore sets what it holds."""
        self.best_value.assign(self._worst)
        self.best_step.assign(-1)
        self.history_json.assign("[]")
        self.train_seconds.assign(0.0)
        self.version.assign(0)

    def restore(self, path: str) -> bool:
        """Restores the state saved in checkpoint ``path``; returns False (the
        state reset, best_value restored) for a checkpoint older than the state."""
        self.reset()
        tf.train.Checkpoint(**self.variables()).read(path).expect_partial()
        if int(self.version.numpy()) == 0:
            return False
        self.version.assign(VERSION)
        return True

    @property
    def history(self) -> list[dict[str, Any]]:
        return json.loads(self.history_json.numpy().decode())

    @property
    def best(self) -> tuple[float, int]:
        return float(self.best_value.numpy()), int(self.best_step.numpy())

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        best = float(self.best_value.numpy())
        return value > best if self.higher_is_better else value < best

    def record(self, result: dict[str, Any]) -> bool:
        """Appends a validation ``result`` (with "step" and "mean") to the history;
        returns whether it is the new best (then best_value and best_step follow)."""
        improved = self.improves(float(result["mean"]))
        if improved:
            self.best_value.assign(float(result["mean"]))
            self.best_step.assign(int(result["step"]))
        entry = finite_or_none({**result, "best": improved})
        self.history_json.assign(json.dumps(self.history + [entry], sort_keys=True))
        return improved

    def adopt_history(self, history: list[dict[str, Any]]) -> None:
        """Sets the history (and the best from it) of a run whose checkpoint
        predates the state: the entries of its validation.json up to the step."""
        self.best_value.assign(self._worst)
        self.best_step.assign(-1)
        self.history_json.assign("[]")
        for entry in sorted(history, key=lambda entry: entry["step"]):
            mean = entry.get("mean")
            self.record({**entry, "mean": math.nan if mean is None else mean})
        self.version.assign(VERSION)
