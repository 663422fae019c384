"""tfmeta: gradient-based meta-learning for TensorFlow 2 and Keras 3."""

import os as _os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with newer
# vector and matrix extensions; on others (e.g. AVX2 CPUs) its Eigen kernels run. For the
# small convolutions of meta-learning the oneDNN kernels are faster and use
# less memory (BUILD_NOTES.md: second-order MAML 20-way step -25%, FOMAML
# -20%), so tfmeta turns them on unless the user chose. TensorFlow reads the
# variable when it is first imported: import tfmeta first, or set it yourself
# (TF_ENABLE_ONEDNN_OPTS=0 keeps the Eigen kernels).
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from tfmeta.algorithms import FOMAML, LEO, MAML, Reptile, get_algorithm
from tfmeta.core import FastWeightLearner, Learner
from tfmeta.data import Episode, episode_dataset, sinusoid_dataset
from tfmeta.models import MetaBatchNorm, conv4, mlp
from tfmeta.training import Trainer, evaluate

__version__ = "0.1.0"

CPU_THREADING = ("tasks", "ops")


def set_cpu_threading(mode: str) -> None:
    """How TensorFlow spreads a meta-step over the CPU's cores.

    "tasks": every op on one thread, as many ops at once as there are cores
    (``intra_op=1``, ``inter_op=cores``). The tasks of a meta-batch are
    independent chains of small ops, so whole tasks run side by side instead
    of each small op being split over the cores and joined again (measured:
    second-order MAML 13% faster at 20-way, 27% at 5-way on 2 cores;
    BUILD_NOTES.md). It pays when a meta-batch has at least as many tasks as
    there are cores. "ops": TensorFlow's default (each op split over the
    cores), for one large model, a single task, or more cores than tasks.

    An XLA-compiled meta-step is one computation that XLA spreads over the
    intra-op threads itself: use "ops" with ``jit_compile=True`` ("tasks"
    runs it on one thread; measured 1.3-1.5x slower).

    TensorFlow fixes its thread pools when it starts: call this before any
    TensorFlow op runs, as the training binaries do.
    """
    if mode not in CPU_THREADING:
        raise ValueError(f"cpu threading must be one of {CPU_THREADING}, got {mode!r}")
    import tensorflow as tf

    intra, inter = (1, len(_os.sched_getaffinity(0))) if mode == "tasks" else (0, 0)
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
    """Caps the heap arenas of the C library's malloc at ``count`` (``None``:
    one per CPU core this process may use).

    glibc gives each thread that allocates its own arena, up to eight per
    core. TensorFlow's threads allocate and free tensors in many arenas, and
    memory freed in one arena is not reused by another, so the process holds
    more memory than its tensors need. With one arena per core the meta-step's
    peak resident memory is 20-45 MiB lower on 2 cores and no slower
    (BUILD_NOTES.md). It applies to arenas made after the call: call it at
    program start, before TensorFlow runs an op, as the training binaries do.

    Returns False, changing nothing, where the C library is not glibc.
    """
    if count is None:
        count = len(_os.sched_getaffinity(0))
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"malloc arenas must be a positive integer, got {count!r}")
    import ctypes

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    m_arena_max = -8  # glibc's malloc.h
    return bool(libc.mallopt(m_arena_max, count))


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


__all__ = [
    "FOMAML",
    "LEO",
    "MAML",
    "Episode",
    "FastWeightLearner",
    "Learner",
    "MetaBatchNorm",
    "Reptile",
    "Trainer",
    "conv4",
    "episode_dataset",
    "evaluate",
    "get_algorithm",
    "mlp",
    "onednn_enabled",
    "set_cpu_threading",
    "set_malloc_arenas",
    "sinusoid_dataset",
]
