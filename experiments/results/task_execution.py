"""How the tasks of a second-order MAML meta-step are executed: compile time and step time.

  python -m experiments.results.task_execution --variant=loop --meta_batch_size=32

Variants (5-way 1-shot, 1 query per class, max-pool conv4 with 64 filters,
1 inner step, random inputs as in the benchmark):

- loop: the learner's meta-step, a Python loop calling the non-inlined
  per-task function once per task (the graph holds B call ops).
- map_fn: ``tf.map_fn`` over the tasks calling the same per-task function
  (``parallel_iterations=B``): a graph independent of B.
- chunked: ``tf.map_fn`` over chunks of ``--chunk`` tasks, each iteration
  calling the per-task function on its chunk (2 iterations in parallel).
- vectorized_map: ``tf.vectorized_map`` over the tasks (``--fallback`` lets it
  fall back to a while loop where pfor has no converter).

Prints the first call's seconds (trace, compile and one step) and the
median of ``--steps`` further steps.
"""

from __future__ import annotations

import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS
VARIANTS = ("loop", "map_fn", "chunked", "vectorized_map")


def main(argv):
    del argv
    import keras
    import numpy as np
    import tensorflow as tf

    from tfmeta.algorithms import MAML
    from tfmeta.models import conv4

    b, n = FLAGS.meta_batch_size, 5
    rng = np.random.default_rng(0)
    episode = (
        tf.constant(rng.standard_normal((b, n, 28, 28, 1)), tf.float32),
        tf.constant(np.tile(np.arange(n), (b, 1)), tf.int32),
        tf.constant(rng.standard_normal((b, n, 28, 28, 1)), tf.float32),
        tf.constant(np.tile(np.arange(n), (b, 1)), tf.int32),
    )
    model = conv4(n, (28, 28, 1), filters=64, pooling="max", seed=0)
    learner = MAML(model, keras.optimizers.Adam(1e-3), inner_lr=0.4, inner_steps=1)
    seeds = tf.zeros([b, 2], tf.int64)
    specs = ([tf.TensorSpec(v.shape, v.dtype) for v in learner.variables],)
    specs += (tf.TensorSpec([], tf.float32),)

    def apply(gradient_sums, loss_sum):
        mean = [g / b for g in gradient_sums]
        learner.outer_optimizer.apply_gradients(zip(mean, learner.variables))
        return loss_sum / b

    if FLAGS.variant == "loop":

        def call():
            return learner.meta_train_step(episode)["loss"]

    elif FLAGS.variant == "map_fn":

        def one(args):
            result = learner._task_fn(*args)
            return list(result.meta_gradient), result.query_loss

        @tf.function
        def step(episode):
            gradients, losses = tf.map_fn(
                one,
                (*episode, seeds),
                fn_output_signature=specs,
                parallel_iterations=b,
            )
            return apply(
                [tf.reduce_sum(g, 0) for g in gradients], tf.reduce_sum(losses)
            )

        def call():
            return step(episode)

    elif FLAGS.variant == "chunked":
        size = FLAGS.chunk
        if b % size:
            raise app.UsageError(
                f"--meta_batch_size must be a multiple of --chunk={size}"
            )

        def chunk(args):
            results = [learner._task_fn(*(t[i] for t in args)) for i in range(size)]
            sums = [
                tf.add_n([r.meta_gradient[k] for r in results])
                for k in range(len(learner.variables))
            ]
            return sums, tf.add_n([r.query_loss for r in results])

        @tf.function
        def step(episode):
            parts = tuple(
                tf.reshape(t, [b // size, size, *t.shape[1:]])
                for t in (*episode, seeds)
            )
            gradients, losses = tf.map_fn(
                chunk, parts, fn_output_signature=specs, parallel_iterations=2
            )
            return apply(
                [tf.reduce_sum(g, 0) for g in gradients], tf.reduce_sum(losses)
            )

        def call():
            return step(episode)

    else:

        def one(args):
            gradient, loss, _, _ = learner.task_result(*args)
            return gradient, loss

        @tf.function
        def step(episode):
            gradients, losses = tf.vectorized_map(
                one, (*episode, seeds), fallback_to_while_loop=FLAGS.fallback
            )
            return apply(
                [tf.reduce_sum(g, 0) for g in gradients], tf.reduce_sum(losses)
            )

        def call():
            return step(episode)

    start = time.perf_counter()
    call().numpy()
    first = time.perf_counter() - start
    times = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        call().numpy()
        times.append(time.perf_counter() - start)
    print(
        f"{FLAGS.variant} (meta-batch {b}): first call {first:.1f} s, "
        f"median {1000 * statistics.median(times):.0f} ms/step"
    )


if __name__ == "__main__":
    flags.DEFINE_enum("variant", "loop", list(VARIANTS), "how tasks are executed")
    flags.DEFINE_integer("meta_batch_size", 32, "tasks per meta-step")
    flags.DEFINE_integer("chunk", 8, "chunked: tasks per map_fn iteration")
    flags.DEFINE_bool("fallback", False, "vectorized_map: fall back to a while loop")
    flags.DEFINE_integer("steps", 5, "timed steps after the first call")
    app.run(main)
