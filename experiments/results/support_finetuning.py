"""Test-time fine-tuning of a Prototypical Network on its distorted support set.

  python -m experiments.results.support_finetuning --workdir=RUN --tasks=val \
      --variants=align:1:10,full:0.03:5 [--support_copies=8] [--support_augment=1]

A study, not a learner option: it measures whether adapting to a task's
support set (joined by its distorted copies, as served) helps the run's
best checkpoint, on the run's own validation or test tasks, each variant
paired with the served figure without fine-tuning on the same tasks. Both
variants minimize the support rows' cross-entropy against the class means
(squared Euclidean, the learner's own distance), each row's own class mean
leaving that row out (``leave_one_out_loss``: with one shot, a row's class
mean without its copies is not defined, so copies are required), by plain
gradient descent from the trained model:

- ``align:LR:STEPS``: a linear map A ``[d, d]`` of the embeddings, from the
  identity, with the backbone fixed (the pre-classifier alignment of Li,
  Liu and Bilen, "Universal Representation Learning from Multiple Domains
  for Few-shot Classification", ICCV 2021, as their URL/TSA code runs it
  at test time; they use cosine logits, Adadelta and no leave-one-out).
- ``full:LR:STEPS``: every embedding weight (fine-tuning the backbone,
  the "fine-tuning" baselines of Chen et al. 2019 and Dhillon et al. 2020,
  with the distorted copies as their only augmentation).

Each query is still answered independently of the others. The figures are
printed (mean accuracy, and the per-task paired difference with its 95%
t-interval); the run's folder is not written.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from absl import app, flags

from experiments import InputError, checks, run_binary
from tfmeta.algorithms.protonet import class_prototypes
from tfmeta.core import functional
from tfmeta.training import evaluate, mean_confidence_interval

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module registers no flags."""
    flags.DEFINE_string("workdir", None, "A trained protonet run.")
    flags.DEFINE_enum("tasks", "val", ["val", "test"], "The run's tasks to measure on.")
    flags.DEFINE_list("variants", [], "KIND:LR:STEPS, KIND align or full.")
    flags.DEFINE_integer("support_copies", 8, "Distorted copies of the support set.")
    flags.DEFINE_float("support_augment", 1.0, "Their strength.")


KINDS = ("align", "full")


def leave_one_out_loss(z: tf.Tensor, y: tf.Tensor, n_way: int) -> tf.Tensor:
    """Mean cross-entropy of the rows ``z`` ``[S, d]`` (labels ``y``) against
    the class means, with logits minus the squared distances; a row's own
    class mean leaves the row out. With m rows in that class, the mean
    without row i is c - (z_i - c) / (m - 1), so ||z_i - c_without_i||^2 =
    (m / (m - 1))^2 ||z_i - c||^2: one scale on the own-class column."""
    one_hot = tf.one_hot(y, n_way, dtype=z.dtype)
    counts = tf.gather(tf.reduce_sum(one_hot, 0), y)  # m of each row's class
    prototypes = class_prototypes(z, y, n_way)
    distances = tf.reduce_sum(tf.square(z[:, None, :] - prototypes[None]), -1)
    scale = tf.square(counts / (counts - 1.0))[:, None]
    distances *= 1.0 + one_hot * (scale - 1.0)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=-distances)
    )


def aligned_outputs(learner, lr, steps, support_x, support_y, query_x, _steps):
    """The queries' logits under a map A of the embeddings fitted to the
    support set (backbone fixed)."""
    weights = learner.embedding_weights()
    support, query = functional.support_and_query(
        learner.embedding, weights, support_x, query_x
    )
    a = tf.eye(support.shape[-1], dtype=support.dtype)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(a)
            loss = leave_one_out_loss(support @ a, support_y, learner.n_way)
        a -= lr * tape.gradient(loss, a)
    prototypes = class_prototypes(support @ a, support_y, learner.n_way)
    return learner.logits(query @ a, prototypes)


def fine_tuned_weights(learner, lr, steps, support_x, support_y) -> list[tf.Tensor]:
    """The embedding's weights after ``steps`` gradient steps of ``lr`` on
    the support rows' ``leave_one_out_loss`` (batch norm on their own
    statistics, as the support set always is)."""
    weights = learner.embedding_weights()
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(weights)
            z = functional.forward(learner.embedding, weights, support_x)
            loss = leave_one_out_loss(z, support_y, learner.n_way)
        gradients = tape.gradient(loss, weights)
        weights = [w - lr * g for w, g in zip(weights, gradients)]
    return weights


def fine_tuned_outputs(learner, lr, steps, support_x, support_y, query_x, _steps):
    """The queries' logits after fine-tuning the embedding on the support set."""
    weights = fine_tuned_weights(learner, lr, steps, support_x, support_y)
    support, query = functional.support_and_query(
        learner.embedding, weights, support_x, query_x
    )
    return learner.logits(query, class_prototypes(support, support_y, learner.n_way))


OUTPUTS = {"align": aligned_outputs, "full": fine_tuned_outputs}


def parse_variant(text: str) -> tuple[str, float, int]:
    try:
        kind, lr, steps = text.split(":")
        lr, steps = float(lr), int(steps)
    except ValueError:
        raise ValueError(f"a variant is KIND:LR:STEPS, got {text!r}") from None
    if kind not in KINDS or not np.isfinite(lr) or lr < 0 or steps < 0:
        raise ValueError(
            f"a variant is KIND:LR:STEPS with KIND in {KINDS}, LR >= 0 and "
            f"STEPS >= 0, got {text!r}"
        )
    return kind, lr, steps


def restored(workdir, config, variant=None):
    """The run's best checkpoint as a learner that answers ``variant``'s way
    (None: as served)."""
    from experiments.export import restore_learner

    learner, _ = restore_learner(workdir, config, "best")
    if variant is not None:
        kind, lr, steps = variant
        # served_outputs (support copies, then query_outputs) stays the learner's
        learner.query_outputs = functools.partial(OUTPUTS[kind], learner, lr, steps)
    return learner


def per_task_accuracy(learner, episodes) -> np.ndarray:
    result = evaluate(learner, episodes, keep_outputs=True)
    return (result["outputs"].argmax(-1) == result["labels"]).mean(axis=1)


def study(
    workdir: str, tasks: str, variants, copies: int, strength: float, print_fn=print
) -> list[str]:
    """The lines printed (each as it is measured): the served figure, then
    each variant's, paired."""
    from tfmeta.data.tasks import task_sets

    config = checks.trained_workdir_config(
        workdir, {"support_copies": copies, "support_augment": strength}
    )
    if config["algorithm"] != "protonet":
        raise InputError(f"{workdir} is a {config['algorithm']} run, not protonet")
    if config["k_shot"] == 1 and not copies:
        raise InputError(
            "--support_copies=0 with one shot: a row's class mean without it is "
            "not defined; give at least one copy"
        )
    data = task_sets(config)
    episodes = data.val() if tasks == "val" else data.test()
    base = per_task_accuracy(restored(workdir, config), episodes)
    mean, ci = mean_confidence_interval(base)
    served = f"served, {copies} support copies: {100 * mean:.2f} +- {100 * ci:.2f}"
    lines = [f"{served} ({base.size} {tasks} tasks)"]
    print_fn(lines[-1])
    for variant in variants:
        accuracy = per_task_accuracy(restored(workdir, config, variant), episodes)
        diff, diff_ci = mean_confidence_interval(accuracy - base)
        kind, lr, steps = variant
        lines.append(
            f"{kind}, lr {lr:g}, {steps} steps: {100 * accuracy.mean():.2f} "
            f"(paired {100 * diff:+.2f} +- {100 * diff_ci:.2f})"
        )
        print_fn(lines[-1])
    return lines


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    try:
        variants = [parse_variant(v) for v in FLAGS.variants]
    except ValueError as error:
        raise InputError(str(error)) from None
    study(
        FLAGS.workdir,
        FLAGS.tasks,
        variants,
        FLAGS.support_copies,
        FLAGS.support_augment,
        print_fn=functools.partial(print, flush=True),
    )


if __name__ == "__main__":
    define_flags()
    run_binary(__name__, main)
