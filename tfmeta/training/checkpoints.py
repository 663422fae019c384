"""Checkpoint folders: the files on disk are the truth, every restore is verified.

A folder holds ``ckpt-<step>.index`` and ``ckpt-<step>.data-*`` written by
``tf.train.Checkpoint.write``, and a ``checkpoint`` state file in
TensorFlow's text format (read by ``tf.train.latest_checkpoint`` and other
tools). The state file is only a view: the list of checkpoints always comes
from the files, so a lost or garbled state file loses nothing. TensorFlow
checkpoints carry a CRC32C per tensor and per index block: a checkpoint is
intact when its index and every tensor read back with matching checksums, and
a truncated or bit-flipped one is skipped for the next older one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable

import keras
import tensorflow as tf

from tfmeta import errors
from tfmeta.errors import first_line
from tfmeta.training.files import write_if_changed

STATE_FILE = "checkpoint"
PREFIX = "ckpt-"
# What reading or restoring a damaged or foreign checkpoint raises: TensorFlow
# op errors (checksum, bad magic, shape), a short read, a count or object mismatch.
CHECKPOINT_ERRORS = (tf.errors.OpError, IndexError, ValueError, AssertionError)
_NAME = re.compile(r"^ckpt-(\d+)\.(index|data-\d+-of-\d+)$")


class CheckpointError(RuntimeError):
    """Raised when checkpoints exist but none can be restored."""


class DiskFullError(CheckpointError, errors.DiskFullError):
    """Raised when a checkpoint cannot be written because its disk is full."""


def checkpoint_bytes(root: tf.train.Checkpoint) -> int:
    """The bytes of the variables ``root`` saves (a checkpoint's size, within its index)."""
    total = 0
    for obj in tf.train.TrackableView(root).descendants():
        if isinstance(obj, keras.Variable):  # Keras 3 (an optimizer's slots)
            obj = obj.value
        if isinstance(obj, tf.Variable) and obj.shape.is_fully_defined():
            total += obj.shape.num_elements() * obj.dtype.size
    return total


def reason(error: BaseException) -> str:
    """The first line of ``error``, without TensorFlow's function-node prefix."""
    return f"{type(error).__name__}: {first_line(error)[:200]}"


def learner_root(
    model: keras.Model, optimizer, learner_variables=(), **state
) -> tf.train.Checkpoint:
    """What a training checkpoint holds: theta (the model's variables and the
    meta-parameters a learner owns besides them, e.g. learned inner learning
    rates), the learner's state (e.g. running statistics; ``learner_variables``
    are its ``saved_variables``), the outer optimizer's state (its step count
    included) and ``state`` (named tf.Variables)."""
    if learner_variables:
        state["learner_variables"] = [
            v.value if isinstance(v, keras.Variable) else v for v in learner_variables
        ]
    return tf.train.Checkpoint(
        model_variables=[v.value for v in model.variables],
        optimizer=optimizer,
        **state,
    )


def restore_model_and_optimizer(
    path: str, model: keras.Model, optimizer, learner_variables=()
) -> None:
    """Restores theta and the optimizer from the checkpoint ``path``; raises
    ValueError if it holds another number of model variables, AssertionError
    if a variable of ``model`` or ``optimizer`` is absent from it."""
    keys = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    count = len({key.split("/")[1] for key in keys if key.startswith("model_")})
    if count != len(model.variables):
        raise ValueError(
            f"the checkpoint holds {count} model variables, the model has {len(model.variables)}"
        )
    status = learner_root(model, optimizer, learner_variables).read(path)
    status.assert_existing_objects_matched()
    status.expect_partial()


class CheckpointDir:
    """The checkpoints of one folder, by step; keeps the newest ``max_to_keep`` (None: all)."""

    def __init__(self, directory: str, max_to_keep: int | None = None):
        self.directory = directory
        self.max_to_keep = max_to_keep

    def path(self, step: int) -> str:
        return os.path.join(self.directory, f"{PREFIX}{step}")

    def _files(self) -> dict[int, list[str]]:
        if not os.path.isdir(self.directory):
            return {}
        files: dict[int, list[str]] = {}
        for name in os.listdir(self.directory):
            match = _NAME.match(name)
            if match:
                files.setdefault(int(match.group(1)), []).append(name)
        return files

    def steps(self) -> list[int]:
        """Steps of the checkpoints with any file on disk, newest first (intact or not)."""
        return sorted(self._files(), reverse=True)

    def verify(self, step: int) -> None:
        """Reads every tensor of checkpoint ``step``; raises CheckpointError if one is damaged."""
        path = self.path(step)
        if not os.path.exists(path + ".index"):
            raise CheckpointError(f"{path}: its index file is missing")
        try:
            reader = tf.train.load_checkpoint(path)
            for key in reader.get_variable_to_shape_map():
                reader.get_tensor(key)
        except CHECKPOINT_ERRORS as error:
            raise CheckpointError(f"{path}: {reason(error)}") from error

    def save(self, root: tf.train.Checkpoint, step: int) -> str:
        """Writes checkpoint ``step`` (replacing one of that step), updates the
        state file, then deletes the oldest beyond ``max_to_keep``.

        Raises ``DiskFullError`` (one line naming the folder, the space the
        checkpoint needs and the space free) when the disk fills while
        writing; the partial files of ``step`` are removed and every older
        checkpoint is kept.
        """
        try:
            path = root.write(self.path(step))
        except (tf.errors.ResourceExhaustedError, OSError) as error:
            if not errors.is_disk_full(error):
                raise
            self.remove(step)
            raise DiskFullError(
                errors.disk_full_message(
                    self.directory,
                    f"the checkpoint of step {step}",
                    checkpoint_bytes(root),
                )
                + " (training resumes from the last checkpoint)"
            ) from None
        steps = self.steps()
        if self.max_to_keep is not None:
            for old in steps[self.max_to_keep :]:
                self.remove(old)
        self.write_state()
        return path

    def remove(self, step: int) -> None:
        for name in self._files().get(step, []):
            os.remove(os.path.join(self.directory, name))
        temporary = self.path(step) + "_temp"
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)

    def move_aside(self, step: int, folder: str = "damaged") -> str:
        """Moves checkpoint ``step``'s files into ``<directory>/<folder>/``; returns that folder."""
        target = os.path.join(self.directory, folder)
        os.makedirs(target, exist_ok=True)
        for name in self._files().get(step, []):
            os.replace(os.path.join(self.directory, name), os.path.join(target, name))
        return target

    def _state_text(self) -> str:
        names = [f"{PREFIX}{step}" for step in reversed(self.steps())]
        if not names:
            return ""
        lines = [f'model_checkpoint_path: "{names[-1]}"']
        lines += [f'all_model_checkpoint_paths: "{name}"' for name in names]
        return "\n".join(lines) + "\n"

    def state_problem(self) -> str | None:
        """Why the state file does not list the checkpoints on disk: "missing" or
        "garbled"; None when it is right (or stale only: a save it did not record)."""
        path = os.path.join(self.directory, STATE_FILE)
        if not self.steps():
            return None
        if not os.path.exists(path):
            return "missing"
        try:
            with open(path) as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            return "garbled"
        line = re.compile(
            r'^(model_checkpoint_path|all_model_checkpoint_paths): "[^"]*"$'
        )
        lines = text.splitlines()
        if not lines or not all(line.match(entry) for entry in lines):
            return "garbled"
        return None

    def write_state(self) -> None:
        """Rewrites the state file from the checkpoints on disk (if it differs)."""
        text = self._state_text()
        path = os.path.join(self.directory, STATE_FILE)
        if not text:
            if os.path.exists(path):
                os.remove(path)
            return
        write_if_changed(path, text)

    def restore_newest(
        self,
        restore: Callable[[str], None],
        print_fn: Callable[[str], None] = print,
    ) -> int | None:
        """Verifies and restores the newest intact checkpoint with ``restore(path)``.

        Returns its step, or None when the folder holds no checkpoint. Each
        damaged or unrestorable checkpoint is skipped with a printed line; if
        none restores, raises CheckpointError naming each and why (never a
        silent start from scratch over them).
        """
        failures = []
        for step in self.steps():
            try:
                self.verify(step)
                restore(self.path(step))
            except CheckpointError as error:
                failures.append(str(error))
            except CHECKPOINT_ERRORS as error:
                failures.append(f"{self.path(step)}: {reason(error)}")
            else:
                return step
            print_fn(f"skipping checkpoint {failures[-1]}")
        if failures:
            raise CheckpointError(
                f"no checkpoint in {self.directory} can be restored ("
                + "; ".join(failures)
                + "): repair or move them away to start afresh"
            )
        return None
