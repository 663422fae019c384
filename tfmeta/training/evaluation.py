"""Meta-test evaluation: mean over tasks with a 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from tfmeta.training.learner import Learner


def mean_confidence_interval(values) -> tuple[float, float]:
    """Mean and half-width of its 95% normal-approximation interval,
    1.96 * std / sqrt(n) with the sample (n - 1) standard deviation."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("no values to summarize")
    if values.size == 1:
        return float(values[0]), float("nan")
    return float(values.mean()), float(
        1.96 * values.std(ddof=1) / math.sqrt(values.size)
    )


def evaluate(
    learner: Learner,
    episodes: Iterable,
    inner_steps: int | None = None,
    keep_outputs: bool = False,
    task_groups: list[str] | None = None,
) -> dict[str, float]:
    """Adapts to every task of ``episodes`` (a finite, fixed dataset of task
    batches) and summarizes the query metric per task.

    ``keep_outputs``: the result also holds "outputs" ``[tasks, n_query,
    ...]``, the query outputs the metric was computed from, and "labels"
    ``[tasks, n_query, ...]`` (numpy arrays). ``task_groups``: the group of
    each task (e.g. its alphabet); the result also holds "by_group", each
    group's {"mean", "ci95", "num_tasks"} in first-seen order.

    Returns {"metric", "mean", "ci95", "median", "nonfinite_tasks", "loss",
    "num_tasks", "inner_steps"}; the metric is accuracy (classification) or MSE
    (regression). ``median`` is over the tasks whose metric is finite and
    ``nonfinite_tasks`` counts the others (an adaptation that diverged), which
    make the mean NaN or infinite.
    """
    metrics, losses, outputs, labels = [], [], [], []
    for episode in episodes:
        out = learner.meta_eval_step(episode, inner_steps)
        metrics.append(out[learner.metric_name].numpy())
        losses.append(out["loss"].numpy())
        if keep_outputs:
            outputs.append(out["outputs"].numpy())
            labels.append(np.asarray(episode[3]))
    if not metrics:
        raise ValueError("the evaluation dataset is empty")
    per_task = np.concatenate(metrics).astype(np.float64)
    mean, ci95 = mean_confidence_interval(per_task)
    finite = per_task[np.isfinite(per_task)]
    kept = (
        {"outputs": np.concatenate(outputs), "labels": np.concatenate(labels)}
        if keep_outputs
        else {}
    )
    if task_groups is not None:
        kept["by_group"] = group_figures(per_task, task_groups)
    return {
        "metric": learner.metric_name,
        "mean": mean,
        "ci95": ci95,
        "median": float(np.median(finite)) if finite.size else float("nan"),
        "nonfinite_tasks": int(per_task.size - finite.size),
        "loss": float(np.concatenate(losses).mean()),
        "num_tasks": int(sum(m.size for m in metrics)),
        "inner_steps": int(
            learner.eval_inner_steps if inner_steps is None else inner_steps
        ),
        **kept,
    }


def group_figures(per_task: np.ndarray, task_groups: list[str]) -> dict[str, dict]:
    """Each group's mean, 95% interval and task count, in first-seen order."""
    if len(task_groups) != per_task.size:
        raise ValueError(f"{len(task_groups)} task groups for {per_task.size} tasks")
    names = np.asarray(task_groups)
    figures = {}
    for name in dict.fromkeys(task_groups):
        mean, ci95 = mean_confidence_interval(per_task[names == name])
        figures[name] = {
            "mean": mean,
            "ci95": ci95,
            "num_tasks": int(np.sum(names == name)),
        }
    return figures


def format_result(result: dict) -> str:
    """One line of an evaluation's mean and 95% interval: "accuracy 97.55% +-
    0.30% (95% CI, 600 tasks)", or the MSE for regression; with "by_group",
    each group's accuracy after it ("; Greek 95.10% +- 0.50% (290 tasks)")."""
    value, ci = result["mean"], result["ci95"]
    if result["metric"] == "accuracy":
        line = f"accuracy {100 * value:.2f}% +- {100 * ci:.2f}% (95% CI, {result['num_tasks']} tasks)"
        for name, group in result.get("by_group", {}).items():
            line += (
                f"; {name} {100 * group['mean']:.2f}% +- {100 * group['ci95']:.2f}% "
                f"({group['num_tasks']} tasks)"
            )
        return line
    line = f"{result['metric']} {value:.4f} +- {ci:.4f} (95% CI, {result['num_tasks']} tasks)"
    if "median" in result:
        line += f", median {result['median']:.4f}"
    if result.get("nonfinite_tasks"):
        line += f", {result['nonfinite_tasks']} task(s) diverged (non-finite)"
    return line
