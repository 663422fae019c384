"""The memory a run needs at least, estimated from its config before any
data is read or tensor allocated, against the memory of this machine.

A lower estimate, in float32 (4 bytes per number), of what one meta-step
and one evaluation batch hold at once:

  episodes    = tasks * N * (K + Q) * example
  activations = N * (K + Q) * per_example   (one forward pass of one task)

``example`` is the numbers of one input (image_size^2 * channels; a sinusoid
point's x and y: 2; an embedding's d), ``per_example`` the numbers one
forward pass of the model keeps per input (conv4: the outputs of every
convolution, batch norm, ReLU and pooling; MLP: its hidden units). Tasks are
meta_batch_size in meta-training (with train_n_way, train_k_shot, q_query)
and min(eval_batch_size, max(test_tasks, val_tasks)) in evaluation (with
n_way, k_shot, eval_q_query); a sinusoid task has K + Q points (N = 1). A real step holds more (every inner step's activations, the
other tasks', gradients, prefetched batches), so a refused setting cannot
fit and an accepted one may still not.
"""

from __future__ import annotations

import math
from typing import Any

from tfmeta.data.tasks import eval_batch_tasks
from tfmeta.runtime import machine_memory

BYTES_PER_NUMBER = 4  # float32


def format_bytes(size: float) -> str:
    """``size`` in the largest binary unit that keeps it >= 1 (``23.4 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def _conv4_numbers(config: dict[str, Any], side: int) -> int:
    """Numbers a conv4 forward pass keeps per image of ``side`` x ``side``."""
    filters, total = int(config["filters"]), 0
    for _ in range(int(config["depth"])):
        if config["pooling"] == "max":  # stride-1 conv, norm, ReLU; then pool
            total += 3 * side * side * filters
            side = math.ceil(side / 2)
            total += side * side * filters
        else:  # stride-2 conv, norm, ReLU
            side = math.ceil(side / 2)
            total += 3 * side * side * filters
    return total


def example_numbers(config: dict[str, Any], input_shape: tuple[int, ...] | None) -> int:
    """Numbers of one example: its input (and, for sinusoid, its target)."""
    if config["dataset"] == "sinusoid":
        return 2
    if input_shape is None:  # embeddings before they are read: d >= 1
        return 1
    return math.prod(int(size) for size in input_shape)


def forward_numbers(
    config: dict[str, Any], model: str, input_shape: tuple[int, ...] | None
) -> int:
    """Numbers one forward pass keeps per example (0 where not estimated)."""
    if model == "conv4" and input_shape is not None:
        return _conv4_numbers(config, int(input_shape[0]))
    if model == "mlp":
        return sum(int(units) for units in config["hidden"])
    return 0


def phase_bytes(
    tasks: int, n_way: int, examples_per_class: int, example: int, forward: int
) -> int:
    """episodes + activations of one batch of ``tasks`` (module docstring)."""
    per_task = n_way * examples_per_class
    return (tasks * per_task * example + per_task * forward) * BYTES_PER_NUMBER


def check_memory(
    config: dict[str, Any],
    model: str,
    input_shape: tuple[int, ...] | None,
    *,
    training: bool = True,
    available: int | None = None,
) -> None:
    """Raises ValueError naming the settings, the estimate and the machine's
    memory where a meta-step (with ``training``) or an evaluation batch
    cannot fit; ``model`` is the model's kind (``tfmeta.configs.build.model_name``)."""
    available = machine_memory() if available is None else available
    example = example_numbers(config, input_shape)
    forward = forward_numbers(config, model, input_shape)
    sinusoid = config["dataset"] == "sinusoid"  # K points per task, no classes
    train_n = int(config.get("train_n_way") or config["n_way"])
    train_k = int(config.get("train_k_shot") or config["k_shot"])
    eval_tasks = eval_batch_tasks(config)
    train = {
        "meta_batch_size": config["meta_batch_size"],
        "train_n_way" if config.get("train_n_way") else "n_way": train_n,
        "train_k_shot" if config.get("train_k_shot") else "k_shot": train_k,
        "q_query": config["q_query"],
    }
    evaluation = {
        "eval_batch_size": config["eval_batch_size"],
        "n_way": config["n_way"],
        "k_shot": config["k_shot"],
        "eval_q_query": config["eval_q_query"],
    }
    phases = [
        (
            f"a meta-training batch of {config['meta_batch_size']} tasks",
            train,
            phase_bytes(
                int(config["meta_batch_size"]),
                1 if sinusoid else train_n,
                train_k + int(config["q_query"]),
                example,
                forward,
            ),
        ),
        (
            f"an evaluation batch of {eval_tasks} tasks",
            evaluation,
            phase_bytes(
                eval_tasks,
                1 if sinusoid else int(config["n_way"]),
                int(config["k_shot"]) + int(config["eval_q_query"]),
                example,
                forward,
            ),
        ),
    ]
    for what, settings, needed in phases[0 if training else 1 :]:
        if needed <= available:
            continue
        if sinusoid:
            settings = {k: v for k, v in settings.items() if not k.endswith("n_way")}
        if config["dataset"] in ("omniglot", "folder"):
            settings["image_size"] = config["image_size"]
        named = ", ".join(f"--{key}={value}" for key, value in settings.items())
        raise ValueError(
            f"{named}: {what} needs at least {format_bytes(needed)} of memory "
            f"(its episodes and one task's activations), more than this machine's "
            f"{format_bytes(available)}"
        )


def check_data_memory(config: dict[str, Any], tasks) -> None:
    """``check_memory`` with the input shape the data gives, where the config
    did not say it (embeddings: d is in the files)."""
    from tfmeta.configs.build import model_name

    if config["dataset"] == "embeddings":
        check_memory(config, model_name(config), tasks.input_shape)
