"""Platform tuning for meta-learning on a CPU, opt-in and in one place.

Importing tfmeta changes nothing in the process; a program that wants the
speed-ups the binaries run with calls, before it imports TensorFlow::

    import tfmeta.runtime

    tfmeta.runtime.configure()  # threads, malloc arenas, oneDNN, native kernels
    import tensorflow as tf

What each setting does and what it was measured to give (BUILD_NOTES.md):

* ``cpu_threading``: "tasks" runs every op on one thread and as many ops at
  once as there are cores (``intra_op=1``, ``inter_op=cores``): the tasks of
  a meta-batch are independent chains of small ops, so whole tasks run side
  by side instead of each small op being split over the cores and joined
  again (second-order MAML 13% faster at 20-way, 27% at 5-way on 2 cores).
  It pays when a meta-batch has at least as many tasks as there are cores.
  "ops" is TensorFlow's default (each op split over the cores): for one
  large model, a single task, or more cores than tasks, and for an
  XLA-compiled step, one computation that XLA threads itself ("tasks" runs
  it on one thread, 1.3-1.5x slower). "auto" is "ops" with ``jit_compile``
  or with fewer tasks a step (``tasks_per_step``, the meta-batch) than cores
  (Prototypical Networks' one 60-way episode a step: 149 against 197 ms on 2
  cores), else "tasks". TensorFlow fixes its thread pools at its first op.
* ``malloc_arenas``: glibc gives each thread that allocates its own heap
  arena, up to eight per core, and memory freed in one arena is not reused
  by another; one arena per core ("cores") keeps a meta-step's peak resident
  memory 20-45 MiB lower on 2 cores at the same speed. "glibc" leaves its
  default. It applies to arenas made after the call.
* ``onednn``: TensorFlow turns its oneDNN CPU kernels on by default only on
  CPUs with its newest vector and matrix extensions; for the small
  convolutions of meta-learning they are faster and use less memory on the
  others too (20-way second-order MAML step -25%, FOMAML -20%). TensorFlow
  reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is first imported. None
  leaves TensorFlow's own choice.
* ``native_kernels``: functions traced afterwards for meta-train steps may
  run the native CPU kernels (``tfmeta.models.kernels``): batch norm's
  second derivative (15-20% faster second-order steps, ~75 MiB less memory
  at 20-way) and max pooling with its derivatives (about 10% faster 20-way
  second-order steps). On by default, without ``configure`` too.

An environment variable the user set wins over the argument of the same
setting, as it does for TensorFlow itself: ``TF_ENABLE_ONEDNN_OPTS`` for
oneDNN, ``TFMETA_NATIVE_KERNELS`` (0/false/off/no: off) for the native kernels.

This module imports TensorFlow only where a setting needs it (the thread
pools; ``onednn_enabled``).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings

CPU_THREADING = ("tasks", "ops")
CPU_THREADING_MODES = ("auto", *CPU_THREADING)
MALLOC_ARENAS_CHOICES = ("cores", "glibc")
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
NATIVE_KERNELS_ENV = "TFMETA_NATIVE_KERNELS"

# The value this module wrote to TF_ENABLE_ONEDNN_OPTS (None: it wrote none),
# to tell its own setting from the user's.
_onednn_written: list[str | None] = [None]
# The process-wide switch of the native kernels (set_native_kernels).
_native_kernels = [True]


@dataclasses.dataclass(frozen=True)
class Settings:
    """What ``configure`` left in effect. ``cpu_threading`` is "tasks" or
    "ops" (None: not set), with the thread counts TensorFlow reports (0: its
    choice); ``malloc_arenas`` the cap (None: glibc's default, or not glibc);
    ``onednn`` what ``TF_ENABLE_ONEDNN_OPTS`` asks for (None: unset,
    TensorFlow's choice; ``onednn_enabled()`` tells what runs)."""

    cpu_threading: str | None
    intra_op_threads: int | None
    inter_op_threads: int | None
    malloc_arenas: int | None
    onednn: bool | None
    native_kernels: bool


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def tensorflow_loaded() -> bool:
    """Whether this process has imported TensorFlow (or Keras' TensorFlow backend)."""
    return "tensorflow" in sys.modules


def resolve_cpu_threading(
    mode: str, jit_compile: bool = False, tasks_per_step: int | None = None
) -> str:
    """``mode`` with "auto" resolved: "ops" for an XLA-compiled step (one
    computation, threaded by XLA) or for steps of fewer tasks
    (``tasks_per_step``; None: unknown) than this process has cores, whose
    ops are better split over the cores; "tasks" otherwise."""
    if mode not in CPU_THREADING_MODES:
        raise ValueError(
            f"cpu threading must be one of {CPU_THREADING_MODES}, got {mode!r}"
        )
    if tasks_per_step is not None and (
        isinstance(tasks_per_step, bool)
        or not isinstance(tasks_per_step, int)
        or tasks_per_step < 1
    ):
        raise ValueError(
            f"tasks_per_step must be a positive integer, got {tasks_per_step!r}"
        )
    if mode == "auto":
        few_tasks = tasks_per_step is not None and tasks_per_step < _cores()
        return "ops" if jit_compile or few_tasks else "tasks"
    return mode


def resolve_malloc_arenas(value: int | str) -> int | None:
    """ "cores" is one arena per CPU core this process may use, "glibc" (None)
    leaves glibc's default; a positive integer (or its digits) is the cap."""
    if value == "glibc":
        return None
    if value == "cores":
        return _cores()
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ValueError(
        f"malloc arenas must be one of {MALLOC_ARENAS_CHOICES} or a positive "
        f"number, got {value!r}"
    )


def set_cpu_threading(mode: str) -> None:
    """TensorFlow's thread pools for ``mode`` ("tasks" or "ops", see the
    module docstring). Imports TensorFlow; must run before its first op
    (RuntimeError after, unless the pools already match)."""
    if mode not in CPU_THREADING:
        raise ValueError(f"cpu threading must be one of {CPU_THREADING}, got {mode!r}")
    import tensorflow as tf

    intra, inter = (1, _cores()) if mode == "tasks" else (0, 0)
    threading = tf.config.threading
    current = (
        threading.get_intra_op_parallelism_threads(),
        threading.get_inter_op_parallelism_threads(),
    )
    if current == (intra, inter):
        return
    try:
        threading.set_intra_op_parallelism_threads(intra)
        threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as error:
        raise RuntimeError(
            f"set_cpu_threading({mode!r}) must run before TensorFlow starts "
            f"(its thread pools are fixed at the first op; now intra_op, "
            f"inter_op = {current}): {error}"
        ) from error


def set_malloc_arenas(count: int | None = None) -> bool:
    """Caps the heap arenas of glibc's malloc at ``count`` (None: one per CPU
    core this process may use); arenas made after the call obey it. Returns
    False, changing nothing, where the C library is not glibc."""
    if count is None:
        count = _cores()
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"malloc arenas must be a positive integer, got {count!r}")
    import ctypes

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    m_arena_max = -8  # glibc's malloc.h
    return bool(libc.mallopt(m_arena_max, count))


def _onednn_chosen_by_user() -> bool:
    value = os.environ.get(ONEDNN_ENV)
    return value is not None and value != _onednn_written[0]


def set_onednn(enabled: bool) -> bool:
    """Sets ``TF_ENABLE_ONEDNN_OPTS`` for the TensorFlow this process will
    import, unless the user set it. Returns whether it applies: False once
    TensorFlow is imported with the other setting (the variable is then left
    as it is)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"onednn must be True or False, got {enabled!r}")
    if _onednn_chosen_by_user():
        return True
    if tensorflow_loaded():
        return onednn_enabled() == enabled
    value = "1" if enabled else "0"
    os.environ[ONEDNN_ENV] = value
    _onednn_written[0] = value
    return True


def _onednn_requested() -> bool | None:
    value = os.environ.get(ONEDNN_ENV, "").strip().lower()
    return {"1": True, "true": True, "0": False, "false": False}.get(value)


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process
    (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def set_native_kernels(enabled: bool) -> None:
    """The process-wide switch of the native kernels, read when a
    meta-train step is traced (``TFMETA_NATIVE_KERNELS``, where set, wins)."""
    if not isinstance(enabled, bool):
        raise TypeError(f"native_kernels must be True or False, got {enabled!r}")
    _native_kernels[0] = enabled


def native_kernels_enabled() -> bool:
    """Whether meta-train steps traced now may use the native kernels."""
    value = os.environ.get(NATIVE_KERNELS_ENV)
    if value is not None:
        return value.strip().lower() not in ("0", "false", "off", "no")
    return _native_kernels[0]


def configure(
    cpu_threading: str | None = "auto",
    malloc_arenas: int | str | None = "cores",
    onednn: bool | None = True,
    native_kernels: bool | None = True,
    jit_compile: bool = False,
    tasks_per_step: int | None = None,
) -> Settings:
    """Tunes this process for meta-learning on a CPU; call it before importing
    TensorFlow (the module docstring says what each setting does). None leaves
    a setting as it is. ``jit_compile`` is whether the meta-steps will be
    XLA-compiled and ``tasks_per_step`` how many tasks a meta-step holds (the
    meta-batch; None: unknown), both for ``cpu_threading="auto"``.

    Every value is checked first (ValueError, TypeError). A setting that can no longer
    apply because TensorFlow has already been imported (oneDNN) or has
    started (the thread pools) is kept as it is, with a RuntimeWarning that
    names it; the rest still apply. Imports TensorFlow when ``cpu_threading``
    is set.
    """
    mode = None
    if cpu_threading is not None:
        mode = resolve_cpu_threading(cpu_threading, jit_compile, tasks_per_step)
    arenas = None if malloc_arenas is None else resolve_malloc_arenas(malloc_arenas)
    for name, value in (("onednn", onednn), ("native_kernels", native_kernels)):
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{name} must be True, False or None, got {value!r}")

    capped = arenas is not None and set_malloc_arenas(arenas)
    if onednn is not None and not set_onednn(onednn):
        warnings.warn(
            f"tfmeta.runtime.configure(onednn={onednn}): TensorFlow was imported "
            f"before it, with its oneDNN kernels {'off' if onednn else 'on'}, and "
            f"keeps them so; call configure before importing TensorFlow (or "
            f"set {ONEDNN_ENV}={int(onednn)})",
            RuntimeWarning,
            stacklevel=2,
        )
    if native_kernels is not None:
        set_native_kernels(native_kernels)
    intra = inter = None
    if mode is not None:
        import tensorflow as tf

        try:
            set_cpu_threading(mode)
        except RuntimeError as error:
            warnings.warn(
                f"{error}; keeping TensorFlow's current thread settings",
                RuntimeWarning,
                stacklevel=2,
            )
            mode = None
        intra = tf.config.threading.get_intra_op_parallelism_threads()
        inter = tf.config.threading.get_inter_op_parallelism_threads()
    return Settings(
        cpu_threading=mode,
        intra_op_threads=intra,
        inter_op_threads=inter,
        malloc_arenas=arenas if capped else None,
        onednn=_onednn_requested(),
        native_kernels=native_kernels_enabled(),
    )


_CGROUP_LIMITS = (
    "/sys/fs/cgroup/memory.max",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
)


def machine_memory() -> int:
    """Bytes of physical memory, or the container's limit where smaller."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for path in _CGROUP_LIMITS:
        try:
            with open(path, encoding="ascii") as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total
