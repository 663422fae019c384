"""Per-task adaptation and curvature of a trained regression run (sinusoid).

  python -m experiments.results.curvature --workdir=/tmp/tfmeta_results/maml_sinusoid_k5

For every meta-test task of the run: the query MSE after each of
``--steps`` inner steps, and lambda_max, the largest eigenvalue of the
Hessian of the support loss at the meta-learned theta (power iteration on
Hessian-vector products). Plain gradient descent with rate alpha is stable
along a direction of curvature lambda only when alpha * lambda < 2, so tasks
with lambda_max > 2 / alpha amplify that component at every step
(|1 - alpha lambda| > 1). Prints means, medians, the tasks whose MSE
diverged and the lambda_max quantiles beside 2 / alpha.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfmeta.configs import BASE
from tfmeta.data.tasks import task_sets
from tfmeta.training import read_config

from ..export import restore_learner

FLAGS = flags.FLAGS


def largest_hessian_eigenvalue(loss_fn, params, iterations: int, seed: int = 1):
    """lambda_max of d^2 loss_fn / d params^2 by power iteration (Hessian-vector products)."""
    vector = [
        tf.random.stateless_normal(p.shape, [seed, i]) for i, p in enumerate(params)
    ]
    value = 0.0
    for _ in range(iterations):
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(v * v) for v in vector]))
        vector = [v / norm for v in vector]
        with tf.GradientTape() as outer:
            outer.watch(params)
            with tf.GradientTape() as inner:
                inner.watch(params)
                loss = loss_fn(params)
            gradient = inner.gradient(loss, params)
            projection = tf.add_n(
                [tf.reduce_sum(g * v) for g, v in zip(gradient, vector)]
            )
        product = outer.gradient(projection, params)
        value = float(tf.add_n([tf.reduce_sum(h * v) for h, v in zip(product, vector)]))
        vector = product
    return value


def main(argv):
    del argv
    config = {**BASE, **read_config(FLAGS.workdir)}
    if config["dataset"] != "sinusoid":
        raise app.UsageError("this diagnostic reads regression (sinusoid) runs")
    learner, path = restore_learner(FLAGS.workdir, config, FLAGS.checkpoint)
    steps = [int(s) for s in FLAGS.steps]
    data = task_sets(config)
    params = learner.parameters()
    rows = []
    for episode in data.test():
        for task in range(episode.support_x.shape[0]):
            sx, sy, qx, qy = (
                t[task]
                for t in (
                    episode.support_x,
                    episode.support_y,
                    episode.query_x,
                    episode.query_y,
                )
            )
            mse = [
                float(
                    tf.reduce_mean(
                        (learner.predict(learner.adapt(sx, sy, s), qx) - qy) ** 2
                    )
                )
                for s in steps
            ]
            curvature = largest_hessian_eigenvalue(
                lambda p, sx=sx, sy=sy: tf.reduce_mean(
                    (learner.forward(p, sx) - sy) ** 2
                ),
                params,
                FLAGS.power_iterations,
            )
            rows.append([*mse, curvature])
    rows = np.array(rows)
    mse = rows[:, :-1]
    print(f"{path}: {len(rows)} tasks, alpha {learner.inner_lr}, K={config['k_shot']}")
    for i, s in enumerate(steps):
        finite = np.isfinite(mse[:, i])
        print(
            f"  {s} step(s): mean MSE {np.mean(mse[:, i]):.4f}, median {np.median(mse[finite, i]):.4f}, "
            f"non-finite {int((~finite).sum())}, above 10: {int((mse[finite, i] > 10).sum())}"
        )
    diverged = np.where(~np.all(np.isfinite(mse), axis=1) | np.any(mse > 10, axis=1))[0]
    for task in diverged:
        print(
            f"  task {task}: MSE {np.round(mse[task], 3).tolist()}, lambda_max {rows[task, -1]:.1f}"
        )
    quantiles = np.quantile(rows[:, -1], [0.5, 0.9, 0.99, 1.0])
    print(
        f"  lambda_max quantiles 50/90/99/100%: {np.round(quantiles, 1).tolist()}; "
        f"2/alpha = {2 / learner.inner_lr:.1f}; tasks above it: {int((rows[:, -1] > 2 / learner.inner_lr).sum())}"
    )


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "the training run's folder", required=True)
    flags.DEFINE_string("checkpoint", "best", "best | latest")
    flags.DEFINE_list(
        "steps", ["1", "5", "10"], "inner steps at which to measure the MSE"
    )
    flags.DEFINE_integer("power_iterations", 30, "power-iteration steps for lambda_max")
    app.run(main)
