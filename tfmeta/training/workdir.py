"""The training workdir: the one owner of a run's folder layout.

::

  <workdir>/
    config.json      the resolved config, written when the run starts
    lock             flock-ed by the process that trains the run
    checkpoints/     the latest checkpoints, ckpt-<step>.index / .data-*
    best/            the best checkpoints by meta-validation
    validation.json  the meta-validation history   } views of the run state
    timing.json      trained steps and seconds     } in the latest checkpoint
    results.json     the meta-test result
    train/ val/      TensorBoard summaries
    workers/<task>/  scratch workdirs of the non-chief workers of a multi-worker run

Evaluation and export read a checkpoint with ``checkpoint_folders``: the best
one, or the latest when no meta-validation ever ran.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from tfmeta.training.checkpoints import CheckpointDir, restore_model_and_optimizer
from tfmeta.training.files import read_json, write_json
from tfmeta.training.lock import FileLock

CONFIG_FILE = "config.json"
CHECKPOINTS = ("best", "latest")


class Workdir:
    """Paths, config, checkpoint folders and lock of one training run's folder.

    Creating a ``Workdir`` writes nothing; only ``write_config``, ``locked``
    and the checkpoint folders' saves do.
    """

    def __init__(self, path: str, max_to_keep: int = 3):
        self.path = os.fspath(path)
        # best/ keeps as many checkpoints as checkpoints/: every best step
        # recorded in a kept latest checkpoint then still has its checkpoint
        # (BUILD_NOTES.md, "Runs you can trust").
        self.latest = CheckpointDir(os.path.join(self.path, "checkpoints"), max_to_keep)
        self.best = CheckpointDir(os.path.join(self.path, "best"), max_to_keep)
        self._lock = FileLock(os.path.join(self.path, "lock"))

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file(CONFIG_FILE)

    @property
    def history_path(self) -> str:
        return self.file("validation.json")

    @property
    def timing_path(self) -> str:
        return self.file("timing.json")

    @property
    def results_path(self) -> str:
        return self.file("results.json")

    def summaries(self, name: str) -> str:
        """The TensorBoard folder ``name`` ("train" or "val")."""
        return self.file(name)

    def worker_path(self, task_type: str, task_id: int) -> str:
        """The scratch workdir of a non-chief worker."""
        return os.path.join(self.path, "workers", f"{task_type}_{task_id}")

    def has_config(self) -> bool:
        return os.path.exists(self.config_path)

    def read_config(self) -> dict[str, Any]:
        if not self.has_config():
            raise FileNotFoundError(
                f"no {CONFIG_FILE} in workdir {self.path!r}: is it a tfmeta training workdir?"
            )
        config = read_json(self.config_path)
        if not isinstance(config, dict):  # a bad file, not a bad argument
            raise ValueError(  # noqa: TRY004
                f"{self.config_path} does not hold a config (a JSON object)"
            )
        return config

    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_path, config)

    def has_checkpoint(self) -> bool:
        """Whether checkpoints/ or best/ holds checkpoint files (intact or not)."""
        return bool(self.latest.steps() or self.best.steps())

    def checkpoint_folders(
        self, which: str = "best"
    ) -> list[tuple[str, CheckpointDir]]:
        """Where to read the ``which`` ("best" or "latest") checkpoint, in order:
        best/ then checkpoints/ for "best" (a run without meta-validation has
        no best), checkpoints/ for "latest"."""
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
        if which == "latest":
            return [("latest", self.latest)]
        return [("best", self.best), ("latest", self.latest)]

    def restore(
        self,
        restore: Callable[[str], None],
        which: str = "best",
        print_fn: Callable[[str], None] = print,
    ) -> str | None:
        """Restores the newest intact ``which`` checkpoint with ``restore(path)``
        (best/ falls back to checkpoints/ when it holds none); returns its path,
        None if the workdir holds no checkpoint. Writes nothing."""
        folders = self.checkpoint_folders(which)
        for label, folder in folders:
            step = folder.restore_newest(restore, print_fn)
            if step is not None:
                if label != which:
                    print_fn(
                        f"no {which} checkpoint in {folders[0][1].directory} "
                        f"(no meta-validation): using the {label}"
                    )
                return folder.path(step)
        return None

    def read_timing(self) -> dict[str, Any]:
        """{"step", "train_seconds"} of the latest checkpoint, {} if unknown."""
        try:
            timing = read_json(self.timing_path)
        except (OSError, ValueError):
            return {}
        return timing if isinstance(timing, dict) else {}

    @property
    def lock_held(self) -> bool:
        return self._lock.held

    def announce_holder(self) -> None:
        """Records this process in the held lock's file (before its first write)."""
        self._lock.announce()

    @contextlib.contextmanager
    def locked(self) -> Iterator[Workdir]:
        """Holds the workdir's lock (WorkdirLockedError if another holds it);
        nested use on the same object keeps the outer hold."""
        if self._lock.held:
            yield self
            return
        self._lock.acquire()
        try:
            yield self
        finally:
            self._lock.release()


def read_config(workdir: str) -> dict[str, Any]:
    """The resolved config a run stored in ``<workdir>/config.json``."""
    return Workdir(workdir).read_config()


def restore_checkpoint(
    workdir: str | Workdir,
    learner,
    which: str = "best",
    print_fn: Callable[[str], None] = print,
) -> str:
    """Restores ``learner.model`` and ``learner.outer_optimizer`` from the
    newest intact ``which`` checkpoint of ``workdir`` ("best": best/, or the
    latest when the run has no best); returns its path.

    Raises FileNotFoundError if the workdir holds no checkpoint and
    CheckpointError if none of them restores. Needs no data and writes nothing.
    """
    workdir = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    path = workdir.restore(
        lambda path: restore_model_and_optimizer(
            path,
            learner.model,
            learner.outer_optimizer,
            getattr(learner, "saved_variables", ()),
        ),
        which,
        print_fn,
    )
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint in {workdir.latest.directory} or {workdir.best.directory}"
        )
    return path
