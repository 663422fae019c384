"""tfmeta's training, evaluation, export and benchmark binaries."""

import os

# The default `import tfmeta` sets (see tfmeta/__init__.py), here too because
# TensorFlow reads it when first imported and a binary may import it (or
# Keras) before tfmeta. Not by importing tfmeta: the benchmark's driver must
# not load TensorFlow, since a child process's peak RSS (ru_maxrss) starts
# from its parent's at exec.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

CPU_THREADING_MODES = ("auto", "tasks", "ops")


def define_cpu_threading_flag() -> None:
    """``--cpu_threading``, shared by the training binaries and the benchmark."""
    from absl import flags

    flags.DEFINE_enum(
        "cpu_threading",
        "auto",
        list(CPU_THREADING_MODES),
        "tasks: each op on one thread and tasks side by side (faster for "
        "meta-batches of small networks); ops: TensorFlow's default, each op "
        "split over all cores; auto: ops with XLA, else tasks",
    )
