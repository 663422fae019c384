"""Where a meta-step's time goes: host time per TensorFlow op type.

  python -m experiments.results.profile_step --algorithm=maml --n_way=20 \
      --meta_batch_size=2 --inner_steps=5

Builds a learner as the benchmark does (``experiments.bench.learners``:
through the registry, on the yardstick's max-pool conv4 for images, random
inputs; 1-shot, 1 query per class), runs two steps, then records one under ``tf.profiler`` and sums the host time of the
op events by op type (kernels such as ``Conv2DBackpropFilter`` or oneDNN's
``_MklNativeConv2DBackpropFilter``; the wrappers of function calls and the
executor are left out). Op times on several threads add up, so the total can
exceed the step's wall time; the shares are what matter.
"""

from __future__ import annotations

import collections
import pathlib
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
# Events that wrap other events (executor, function calls), not kernels.
WRAPPERS = (
    "Process",
    "Run",
    "PartitionedCall",
    "StatefulPartitionedCall",
    "While",
    "Start",
    "Done",
)


def define_flags() -> None:
    flags.DEFINE_string("algorithm", "maml", "a registered algorithm")
    flags.DEFINE_integer("n_way", 20, "classes per task")
    flags.DEFINE_integer("meta_batch_size", 2, "tasks per meta-step")
    flags.DEFINE_integer("inner_steps", 5, "inner steps")
    flags.DEFINE_integer("q_query", 1, "queries per class")
    flags.DEFINE_enum("task_execution", "loop", ["loop", "map_fn"], "task execution")
    flags.DEFINE_bool("unroll_inner_loop", True, "MAML: unrolled inner loop")
    flags.DEFINE_bool("recompute", False, "MAML: recompute activations")
    flags.DEFINE_bool("fused_batch_norm", True, "fused batch norm kernel")
    flags.DEFINE_integer("top", 25, "op types to print")


def op_times(xspace_bytes: bytes) -> tuple[dict[str, float], dict[str, int]]:
    """Milliseconds and event counts per op type on the host planes of an XSpace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_bytes)
    times: dict[str, float] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    for plane in space.planes:
        if "host" not in plane.name.lower():
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name:  # op events are "<op name>:<op type>"
                    continue
                op_type = name.rsplit(":", 1)[1].strip()
                if op_type in WRAPPERS or op_type.startswith("__inference"):
                    continue
                times[op_type] += event.duration_ps / 1e9
                counts[op_type] += 1
    return dict(times), dict(counts)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # (experiments/__init__.py set the oneDNN switch before TensorFlow loads.)
    import tensorflow as tf

    from tfmeta import runtime

    from ..bench import learners
    from ..bench.settings import Settings

    settings = Settings(
        meta_batch_size=FLAGS.meta_batch_size,
        n_way=FLAGS.n_way,
        inner_steps=FLAGS.inner_steps,
        q_query=FLAGS.q_query,
        task_execution=FLAGS.task_execution,
        unroll_inner_loop=FLAGS.unroll_inner_loop,
        recompute=FLAGS.recompute,
        fused_batch_norm=FLAGS.fused_batch_norm,
    )
    try:
        configuration = learners.resolve(FLAGS.algorithm, settings)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    if configuration.skip:
        raise app.UsageError(f"{FLAGS.algorithm}: {configuration.skip}")
    for note in configuration.notes:
        print(f"{FLAGS.algorithm}: {note}")
    b, n = FLAGS.meta_batch_size, FLAGS.n_way
    episode = learners.episode(configuration)
    learner = learners.build_learner(configuration, settings)
    for _ in range(2):
        learner.meta_train_step(episode)["loss"].numpy()
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        tf.profiler.experimental.start(logdir)
        learner.meta_train_step(episode)["loss"].numpy()
        tf.profiler.experimental.stop()
        wall = time.perf_counter() - start
        path = next(pathlib.Path(logdir).rglob("*.xplane.pb"))
        times, counts = op_times(path.read_bytes())
    total = sum(times.values())
    print(
        f"{FLAGS.algorithm}, {n}-way, meta-batch {b}, {FLAGS.inner_steps} inner steps, "
        f"oneDNN {'on' if runtime.onednn_enabled() else 'off'}: profiled step "
        f"{1000 * wall:.0f} ms wall, {total:.0f} ms of op time"
    )
    print(f"{'op type':44s} {'ms':>9s} {'ops':>6s} {'share':>6s}")
    for op_type, ms in sorted(times.items(), key=lambda item: -item[1])[: FLAGS.top]:
        print(f"{op_type:44s} {ms:9.1f} {counts[op_type]:6d} {100 * ms / total:5.1f}%")


if __name__ == "__main__":
    define_flags()
    app.run(main)
