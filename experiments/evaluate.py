"""Evaluates a training workdir on its fixed meta-test tasks.

  python -m experiments.evaluate --workdir=/tmp/tfmeta/maml [--checkpoint=best|latest]

Reads the run's stored config, restores the best checkpoint by
meta-validation (or the latest), and prints the mean query accuracy (MSE for
sinusoid) with its 95% interval at the evaluation inner-step count and at any
``report_inner_steps``; writes them to ``<workdir>/results.json``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from absl import app, flags

from tfmeta.training import (
    CheckpointError,
    Workdir,
    evaluate,
    format_result,
    restore_checkpoint,
    write_json,
)

from . import builders, checks, configure_runtime, run_binary, task_data
from .flags import FLAGS

flags.DEFINE_enum(
    "checkpoint",
    "best",
    ["best", "latest"],
    "best (by meta-validation; the latest if none) | latest",
)


def evaluate_workdir(
    workdir: str,
    *,
    learner=None,
    data: task_data.TaskData | None = None,
    config: dict[str, Any] | None = None,
    which: str = "best",
) -> dict[str, Any]:
    run = Workdir(workdir)
    config = config or run.read_config()
    data = data or task_data.build_data(config)
    if learner is None:
        learner = builders.build_learner(
            config, builders.build_model(config, data.input_shape)
        )
    path = restore_checkpoint(
        run, learner, which, print_fn=lambda line: print(line, flush=True)
    )
    steps = [config["eval_inner_steps"]] + [
        s for s in config["report_inner_steps"] if s != config["eval_inner_steps"]
    ]
    evaluations = []
    for inner_steps in steps:
        start = time.perf_counter()
        result = evaluate(learner, data.test(), inner_steps=inner_steps)
        result["seconds"] = round(time.perf_counter() - start, 1)
        evaluations.append(result)
        print(
            f"meta-test ({inner_steps} inner steps): {format_result(result)}",
            flush=True,
        )
    timing = run.read_timing()
    results = {
        "algorithm": config["algorithm"],
        "dataset": config["dataset"],
        "protocol": data.description,
        "transductive": config["transductive"],
        "checkpoint": path,
        "checkpoint_step": int(path.rsplit("-", 1)[-1]),
        "trained_steps": timing.get("step"),
        "train_seconds": timing.get("train_seconds"),
        "evaluations": evaluations,
        "validation_history": run.history_path
        if os.path.exists(run.history_path)
        else None,
    }
    # Strict JSON: a mean made NaN by diverged tasks is written as null (the
    # count of such tasks is nonfinite_tasks).
    write_json(run.results_path, results)
    return results


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    config = checks.trained_workdir_config(FLAGS.workdir)
    jit_compile = config.get("jit_compile", False)
    configure_runtime(FLAGS.cpu_threading, FLAGS.malloc_arenas, jit_compile)
    try:
        evaluate_workdir(FLAGS.workdir, config=config, which=FLAGS.checkpoint)
    except CheckpointError as error:  # every checkpoint damaged: say which
        raise app.UsageError(str(error)) from error


def run() -> None:
    """The console script ``tfmeta-evaluate``."""
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
