"""tfmeta's training, evaluation, export and benchmark binaries."""

import os
import sys
from collections.abc import Callable

from absl import app

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
    cpu_threading: str,
    malloc_arenas: str,
    jit_compile: bool,
    tasks_per_step: int | None = None,
) -> None:
    """``tfmeta.runtime.configure`` with ``--cpu_threading`` and
    ``--malloc_arenas``, logged; before the binary's first TensorFlow op.
    ``tasks_per_step``: the run's meta-batch, for "auto" threading."""
    from absl import logging

    settings = runtime.configure(
        cpu_threading=cpu_threading,
        malloc_arenas=malloc_arenas,
        jit_compile=jit_compile,
        tasks_per_step=tasks_per_step,
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


class InputError(app.UsageError):
    """A bad input of the user's (a flag's value, a file or folder, a stored
    config): the binary prints its message as one line on stderr and exits
    with status 1, without usage text or traceback. A plain
    ``app.UsageError`` (a required flag missing) still prints the usage."""


def one_line(message: str) -> str:
    """``message`` on one line: its lines joined by "; "."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _exit_with(message: str) -> None:
    program = os.path.basename(sys.argv[0] or "tfmeta")
    sys.stderr.write(f"{program}: error: {one_line(message)}\n")
    sys.stderr.flush()
    sys.exit(1)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with a bad value in one line (absl's own parser
    adds a line pointing to --helpshort); ``--help`` works as in absl."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        _exit_with(f"{error} (--helpshort lists the flags)")


def _one_line_errors(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    def checked_main(argv):
        try:
            return main(argv)
        except InputError as error:
            _exit_with(str(error))

    return checked_main


def run_binary(module: str, main: Callable[[list[str]], None]) -> None:
    """``app.run(main)`` for the binary ``module`` run as a console script
    (``tfmeta-train``), with the help ``python -m`` gives: the module's
    docstring as usage and its flags under ``--helpshort``. absl takes both
    from the main module, here the script's generated wrapper. A bad flag
    value or ``InputError`` is one line on stderr."""
    from absl import flags

    main_module = sys.modules["__main__"]
    if main_module.__doc__ is None:
        main_module.__doc__ = sys.modules[module].__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(_one_line_errors(main), flags_parser=_parse_flags)


def define_cpu_threading_flag() -> None:
    """``--cpu_threading``, shared by the training binaries and the benchmark."""
    from absl import flags

    flags.DEFINE_enum(
        "cpu_threading",
        "auto",
        list(CPU_THREADING_MODES),
        "tasks: each op on one thread and tasks side by side (faster for "
        "meta-batches of small networks); ops: TensorFlow's default, each op "
        "split over all cores; auto: ops with XLA or with a meta-batch smaller "
        "than the cores, else tasks",
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
