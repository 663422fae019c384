"""tfmeta's training, evaluation, export and benchmark binaries."""

import os
import sys
from collections.abc import Callable

# The default `import tfmeta` sets (see tfmeta/__init__.py), here too because
# TensorFlow reads it when first imported and a binary may import it (or
# Keras) before tfmeta. Not by importing tfmeta: the benchmark's driver must
# not load TensorFlow, since a child process's peak RSS (ru_maxrss) starts
# from its parent's at exec.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

CPU_THREADING_MODES = ("auto", "tasks", "ops")


def run_binary(module: str, main: Callable[[list[str]], None]) -> None:
    """``app.run(main)`` for the binary ``module`` run as a console script
    (``tfmeta-train``), with the help ``python -m`` gives: the module's
    docstring as usage and its flags under ``--helpshort``. absl takes both
    from the main module, here the script's generated wrapper."""
    from absl import app, flags

    main_module = sys.modules["__main__"]
    if main_module.__doc__ is None:
        main_module.__doc__ = sys.modules[module].__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


MALLOC_ARENAS_CHOICES = ("cores", "glibc")


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


def resolve_malloc_arenas(value: str) -> int | None:
    """``--malloc_arenas``: "cores" is one arena per CPU core this process may
    use, "glibc" (None) leaves glibc's default."""
    if value == "glibc":
        return None
    if value == "cores":
        return len(os.sched_getaffinity(0))
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise ValueError(
        f"--malloc_arenas must be one of {MALLOC_ARENAS_CHOICES} or a positive "
        f"number, got {value!r}"
    )


def recompute_steps_error(
    recompute_steps: int | None, recompute: bool, unroll_inner_loop: bool
) -> str | None:
    """What is wrong with ``--recompute_steps`` beside the other flags, or None."""
    if recompute_steps is None:
        return None
    if recompute_steps < 0:
        return f"--recompute_steps must be >= 0, got {recompute_steps}"
    if not recompute:
        return "--recompute_steps needs --recompute"
    if not unroll_inner_loop:
        return (
            "--recompute_steps applies to the unrolled inner loop: with "
            "--nounroll_inner_loop every inner step is recomputed"
        )
    return None


def _valid_malloc_arenas(value: str) -> bool:
    try:
        resolve_malloc_arenas(value)
    except ValueError:
        return False
    return True


def define_malloc_arenas_flag() -> None:
    """``--malloc_arenas``, shared by the training binaries and the benchmark."""
    from absl import flags

    flags.DEFINE_string(
        "malloc_arenas",
        "cores",
        "heap arenas of glibc's malloc: cores (one per CPU core; less memory "
        "held by freed tensors, see tfmeta.set_malloc_arenas), glibc (its "
        "default, up to eight per core) or a positive number",
    )
    flags.register_validator(
        "malloc_arenas",
        _valid_malloc_arenas,
        message=f"must be one of {MALLOC_ARENAS_CHOICES} or a positive number",
    )
