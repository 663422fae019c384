"""tfmeta's training, evaluation, export and benchmark binaries."""

import sys
from collections.abc import Callable

from tfmeta import runtime
from tfmeta.runtime import (
    CPU_THREADING_MODES,
    MALLOC_ARENAS_CHOICES,
    resolve_malloc_arenas,
)

# The binaries' platform tuning starts here, before any of them imports
# TensorFlow, which reads the oneDNN switch once, when first imported; their
# main() sets the rest from the flags (configure_runtime). tfmeta.runtime
# loads no TensorFlow: the benchmark's driver must not, since a child
# process's peak RSS (ru_maxrss) starts from its parent's at exec.
if not runtime.tensorflow_loaded():
    runtime.configure(cpu_threading=None, malloc_arenas=None)


def configure_runtime(
    cpu_threading: str, malloc_arenas: str, jit_compile: bool
) -> None:
    """``tfmeta.runtime.configure`` with ``--cpu_threading`` and
    ``--malloc_arenas``, logged; before the binary's first TensorFlow op."""
    from absl import logging

    settings = runtime.configure(
        cpu_threading=cpu_threading,
        malloc_arenas=malloc_arenas,
        jit_compile=jit_compile,
    )
    if settings.malloc_arenas is not None:
        logging.info("malloc arenas: at most %d", settings.malloc_arenas)
    elif malloc_arenas != "glibc":
        logging.warning(
            "--malloc_arenas=%s: the C library is not glibc; ignored", malloc_arenas
        )
    if settings.cpu_threading is not None:
        logging.info(
            "CPU threading %s: intra_op %d, inter_op %d thread(s) (0: TensorFlow's choice)",
            settings.cpu_threading,
            settings.intra_op_threads,
            settings.inter_op_threads,
        )


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
        "held by freed tensors, see tfmeta.runtime), glibc (its "
        "default, up to eight per core) or a positive number",
    )
    flags.register_validator(
        "malloc_arenas",
        _valid_malloc_arenas,
        message=f"must be one of {MALLOC_ARENAS_CHOICES} or a positive number",
    )
