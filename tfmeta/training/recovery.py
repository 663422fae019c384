"""Making a workdir agree with the checkpoint a run resumes from.

The restored checkpoint is the truth. Every crash point of a step leaves one
of these, repaired here (BUILD_NOTES.md, "Runs you can trust"):

- checkpoints newer than the restored one: damaged (it was skipped for
  them); moved aside to ``checkpoints/damaged/``.
- best/ checkpoints newer than the restored step: written after it (the run
  fell back past a damaged latest one); removed, the run makes them again.
- no best/ checkpoint for the restored best step, when that is the restored
  step: a crash between the latest checkpoint and best/; saved from the
  restored state, which is that best one.
- validation.json and timing.json behind or ahead: rewritten from the state.
- a checkpoint of an earlier version (no run state in it): the state taken
  from the validation.json and timing.json that version wrote.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfmeta.training.checkpoints import CheckpointError
from tfmeta.training.files import read_json, write_json
from tfmeta.training.run_state import RunState
from tfmeta.training.workdir import Workdir


def move_damaged_aside(
    workdir: Workdir, step: int, print_fn: Callable[[str], None]
) -> None:
    latest = workdir.latest
    for newer in [s for s in latest.steps() if s > step]:
        folder = latest.move_aside(newer)
        print_fn(f"moved the damaged checkpoint {latest.path(newer)} to {folder}")


def adopt_older_state(
    workdir: Workdir, state: RunState, step: int, print_fn: Callable[[str], None]
) -> None:
    """The run state of a checkpoint written before the state was saved in it:
    its history from validation.json up to ``step`` (the best step and value
    follow from it), its training time from timing.json if that is of ``step``."""
    try:
        history = read_json(workdir.history_path)
    except (OSError, ValueError):
        history = []
    state.adopt_history([entry for entry in history if entry.get("step", 0) <= step])
    timing = workdir.read_timing()
    if timing.get("step") == step and timing.get("train_seconds") is not None:
        state.train_seconds.assign(float(timing["train_seconds"]))
    print_fn(
        f"{workdir.latest.path(step)} predates the saved run state: "
        f"history and best step taken from {workdir.history_path}"
    )


def repair_best(
    workdir: Workdir,
    state: RunState,
    root: tf.train.Checkpoint,
    step: int,
    print_fn: Callable[[str], None],
) -> None:
    """Makes best/ hold the best checkpoint of the state restored at ``step``."""
    best = workdir.best
    for newer in [s for s in best.steps() if s > step]:
        best.remove(newer)
        print_fn(f"removed {best.path(newer)}: written after the restored checkpoint")
    _, best_step = state.best
    if best_step < 0:
        return
    try:
        best.verify(best_step)
    except CheckpointError as error:
        if best_step != step:
            print_fn(f"the best checkpoint is lost ({error}); best/ keeps the others")
            return
        best.remove(best_step)
        best.save(root, step)
        print_fn(
            f"saved the best checkpoint of step {step}, which a crash had kept from best/"
        )
    best.write_state()


def write_views(workdir: Workdir, state: RunState, step: int, history: bool) -> None:
    """validation.json (when ``history``) and timing.json from the run state."""
    if history:
        write_json(workdir.history_path, state.history)
    seconds = round(float(state.train_seconds.numpy()), 1)
    write_json(workdir.timing_path, {"step": step, "train_seconds": seconds})
