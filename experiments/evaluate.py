"""Evaluates a training workdir on its fixed meta-test tasks.

  python -m experiments.evaluate --workdir=/tmp/tfmeta_runs/maml [--checkpoint=best|latest] \
      [--support_copies=8 --support_augment=1] [--ensemble=RUN2,RUN3] [--results_dir=DIR]

Reads the run's stored config, restores the best checkpoint by
meta-validation (or the latest), and prints the mean query accuracy (MSE for
sinusoid) with its 95% interval on the validation tasks, then on the test
tasks at the evaluation inner-step count and at any ``report_inner_steps``;
writes them to ``<workdir>/results.json`` ("validation": the served figure
with the copies the run is evaluated with, an ensemble's own; null after
training, whose validation history holds it). The mode
reported first is the one an export serves (every query normalized with the
support set's statistics, or the learner's running statistics); where batch
norm would normalize a query batch by its own statistics instead, that
transductive figure is reported beside it, whatever the run trained with.
The served mode's query outputs are written to
``<workdir>/test_predictions.npz`` (``outputs [tasks, n_query, ...]``,
``labels``), so an export can be checked against the reported figure.
Where every task's classes come from one alphabet (the alphabet protocol),
each test alphabet's figure follows the whole's (``by_group`` of each
evaluation in results.json).
``--support_copies``, ``--support_augment``, ``--query_copies`` and
``--query_augment`` replace the run's own (``tfmeta.Learner``: distorted
copies of each support set, and of each query, at evaluation and serving);
an export given the same serves the figure reported. Every other setting is
the run's own: one given on the command line is refused.
``--ensemble`` adds other runs of the same data, split and task: the runs
answer as one (mean of their class probabilities), in the served mode only.
``--results_dir`` writes results.json, the predictions and the config they
were evaluated with (config.json, so ``experiments.results.summarize`` reads
the folder) to a folder of their own: the run's figures stay beside its
checkpoints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags

from tfmeta.configs.build import build_learner, build_model
from tfmeta.core.ensemble import Ensemble
from tfmeta.data.tasks import TaskSets, task_sets
from tfmeta.export.signatures import uses_batch_statistics
from tfmeta.training import (
    CheckpointError,
    Workdir,
    evaluate,
    format_result,
    restore_checkpoint,
    write_json,
)

from . import InputError, checks, configure_runtime, run_binary
from .flags import FLAGS, given_settings

PREDICTIONS_FILE = "test_predictions.npz"

flags.DEFINE_list(
    "ensemble",
    None,
    "other runs' workdirs (same data, split and task) to answer with --workdir's as one "
    "ensemble: the mean of their class probabilities",
)
flags.DEFINE_string(
    "results_dir",
    None,
    "folder for results.json and the served predictions (created if absent; "
    "default --workdir, replacing the run's own)",
)
flags.DEFINE_enum(
    "checkpoint",
    "best",
    ["best", "latest"],
    "best (by meta-validation; the latest if none) | latest",
)


def normalization_modes(learner) -> list[tuple[str, bool | None]]:
    """(name, transductive) of the modes meta-test reports, the served one
    first: "served" normalizes every query with the support set's statistics
    (or running statistics, where the learner keeps them), as an export
    does; "transductive" a query batch by its own, beside it where the two
    differ (``None``: the learner's own setting, no batch statistics)."""
    batch_dependent = (
        hasattr(learner, "transductive")
        and uses_batch_statistics(learner)
        and not getattr(learner, "running_statistics", False)
    )
    if not batch_dependent:
        return [("served", None)]
    return [("served", False), ("transductive", True)]


def describe_normalization(learner, transductive: bool | None) -> str:
    if transductive is None:
        if getattr(learner, "running_statistics", False):
            return "per-step running statistics"
        return "no batch statistics"
    return (
        "each query batch's own statistics"
        if transductive
        else "the support set's statistics"
    )


def learner_in_mode(config, data, learner, transductive, run, which):
    """``learner`` if it normalizes as ``transductive`` asks, else one built
    so from ``config`` with the same checkpoint restored."""
    if transductive is None or learner.transductive == transductive:
        return learner
    other = build_learner(
        {**config, "transductive": transductive},
        build_model(config, data.input_shape),
    )
    restore_checkpoint(run, other, which, print_fn=lambda line: None)
    return other


def restore_members(
    members: Sequence[tuple[str, dict[str, Any]]], input_shape, which: str
) -> list:
    """The learners of ensemble members ((workdir, config)), each restored
    from its own ``which`` checkpoint."""
    restored = []
    for workdir, config in members:
        member = build_learner(config, build_model(config, input_shape))
        restore_checkpoint(
            workdir, member, which, print_fn=lambda line: print(line, flush=True)
        )
        restored.append(member)
    return restored


def validate(learner, data: TaskSets, inner_steps, normalization: str) -> dict:
    """The served figure on the run's validation tasks (``inner_steps`` None:
    an ensemble's members, each its own), printed."""
    start = time.perf_counter()
    result = evaluate(learner, data.val(), inner_steps=inner_steps)
    if inner_steps is None:
        result["inner_steps"] = "each member's own"
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(
        f"meta-validation, served ({normalization}), {result['inner_steps']} inner "
        f"steps: {format_result(result)}",
        flush=True,
    )
    return result


def evaluate_workdir(
    workdir: str,
    *,
    learner=None,
    data: TaskSets | None = None,
    config: dict[str, Any] | None = None,
    which: str = "best",
    ensemble: Sequence[tuple[str, dict[str, Any]]] = (),
    results_dir: str | None = None,
    validation_pass: bool = True,
) -> dict[str, Any]:
    """Meta-tests the run's best (or latest) checkpoint in the served mode,
    and transductively beside it where that differs, after a served pass
    over the validation tasks unless ``validation_pass`` is False or the run
    has none (``validation``: an ensemble's own figure, or a run's with the
    copies it is evaluated with; else None); writes results.json and
    the served mode's query outputs (``test_predictions.npz``) into
    ``results_dir`` (created if absent; by default the workdir, else with
    the ``config`` evaluated as its config.json). With
    ``ensemble`` ((workdir, config) of the other members, from
    ``checks.ensemble_configs``), the run and its members answer as one
    (``tfmeta.core.ensemble.Ensemble``), in the served mode only."""
    run = Workdir(workdir)
    results_dir = results_dir or workdir
    os.makedirs(results_dir, exist_ok=True)
    config = config or run.read_config()
    data = data or task_sets(config)
    if learner is None:
        learner = build_learner(config, build_model(config, data.input_shape))
    path = restore_checkpoint(
        run, learner, which, print_fn=lambda line: print(line, flush=True)
    )
    steps = [config["eval_inner_steps"]] + [
        s for s in config["report_inner_steps"] if s != config["eval_inner_steps"]
    ]
    modes = normalization_modes(learner)
    if ensemble:  # each member adapts as it was trained to
        learner = Ensemble(
            [learner, *restore_members(ensemble, data.input_shape, which)]
        )
        modes = [("served", None)]
        steps = [None]
    by_mode: dict[str, list] = {}
    validation = None
    # tasks within one alphabet: each test alphabet's figure beside the whole
    groups = data.test_groups() if data.test_groups else None
    for mode, transductive in modes:
        evaluated = learner_in_mode(config, data, learner, transductive, run, which)
        normalization = (
            "each member's own"
            if ensemble
            else describe_normalization(evaluated, transductive)
        )
        evaluations = by_mode.setdefault(mode, [])
        if mode == "served" and validation_pass and config["val_tasks"]:
            # the validation tasks, answered as the test tasks are
            validation = validate(evaluated, data, steps[0], normalization)
        for inner_steps in steps:
            start = time.perf_counter()
            keep = mode == "served" and inner_steps in (
                None,
                config["eval_inner_steps"],
            )
            result = evaluate(
                evaluated,
                data.test(),
                inner_steps=inner_steps,
                keep_outputs=keep,
                task_groups=groups,
            )
            if inner_steps is None:  # an ensemble's members, each its own
                result["inner_steps"] = "each member's own"
            if keep:
                np.savez(
                    os.path.join(results_dir, PREDICTIONS_FILE),
                    outputs=result.pop("outputs"),
                    labels=result.pop("labels"),
                    inner_steps=-1 if inner_steps is None else inner_steps,
                )
            result["seconds"] = round(time.perf_counter() - start, 1)
            result["normalization"] = normalization
            evaluations.append(result)
            print(
                f"meta-test, {mode} ({normalization}), {result['inner_steps']} "
                f"inner steps: {format_result(result)}",
                flush=True,
            )
    timing = run.read_timing()
    results = {
        "workdir": os.path.abspath(workdir),
        "algorithm": config["algorithm"],
        "dataset": config["dataset"],
        "protocol": data.description,
        "transductive": config["transductive"],
        "support_copies": int(config["support_copies"]),
        "support_augment": float(config["support_augment"]),
        "query_copies": int(config["query_copies"]),
        "query_augment": float(config["query_augment"]),
        "ensemble": [member for member, _ in ensemble],
        "checkpoint": path,
        "checkpoint_step": int(path.rsplit("-", 1)[-1]),
        "trained_steps": timing.get("step"),
        "train_seconds": timing.get("train_seconds"),
        "validation": validation,
        "evaluations": by_mode["served"],
        "transductive_evaluations": by_mode.get("transductive"),
        "predictions": PREDICTIONS_FILE,
        "validation_history": run.history_path
        if os.path.exists(run.history_path)
        else None,
    }
    # Strict JSON: a mean made NaN by diverged tasks is written as null (the
    # count of such tasks is nonfinite_tasks).
    if os.path.abspath(results_dir) != os.path.abspath(workdir):
        write_json(os.path.join(results_dir, "config.json"), config)
    write_json(os.path.join(results_dir, "results.json"), results)
    return results


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    training = [name for name in given_settings() if name not in checks.SERVING_KEYS]
    if training:  # the run's own are used: say so rather than ignore them
        raise InputError(
            f"--{training[0]}: evaluate meta-tests with the run's own settings (its "
            "config.json); of them it takes only "
            + ", ".join(f"--{key}" for key in checks.SERVING_KEYS)
        )
    settings = {
        key: FLAGS[key].value
        for key in checks.SERVING_KEYS
        if FLAGS[key].value is not None
    }
    config = checks.trained_workdir_config(FLAGS.workdir, settings)
    members = checks.ensemble_configs(config, FLAGS.ensemble or [], settings)
    try:  # results.json and the predictions are written there at the end
        results_dir = checks.check_output_folder(
            FLAGS.results_dir or FLAGS.workdir,
            "results_dir" if FLAGS.results_dir else "workdir",
        )
    except checks.FOLDER_ERRORS as error:
        raise InputError(str(error)) from error
    other_run = os.path.isdir(os.path.join(results_dir, "checkpoints"))
    if other_run and results_dir != os.path.abspath(os.path.expanduser(FLAGS.workdir)):
        raise InputError(
            f"--results_dir={FLAGS.results_dir} is another run's folder: "
            "give a folder of its own"
        )
    jit_compile = config.get("jit_compile", False)
    configure_runtime(
        FLAGS.cpu_threading, FLAGS.malloc_arenas, jit_compile, config["meta_batch_size"]
    )
    try:  # the data the run was trained on: moved, damaged or too large
        data = task_sets(config)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise InputError(str(error)) from error
    try:
        evaluate_workdir(
            FLAGS.workdir,
            config=config,
            data=data,
            which=FLAGS.checkpoint,
            ensemble=list(zip(FLAGS.ensemble or [], members)),
            results_dir=results_dir,
        )
    except CheckpointError as error:  # every checkpoint damaged: say which
        raise InputError(str(error)) from error


def run() -> None:
    """The console script ``tfmeta-evaluate``."""
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
