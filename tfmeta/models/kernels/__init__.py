"""Native CPU kernels, compiled on first use against the installed TensorFlow.

- ``batch_norm_grad_grad.cc``: the gradient of training-mode batch norm's
  backward pass (what second-order MAML evaluates once per batch-norm layer
  and inner step) in two passes over the data, where the same closed form
  written with TensorFlow ops takes about twenty.
- ``max_pool.cc``: 2x2 stride-2 max pooling that also returns each window's
  first maximum as a one-byte position, and the two linear maps that
  position defines (the pooling's gradient and that gradient's gradient),
  each one vectorized pass (``tfmeta.models.max_pool``).
- ``conv_pool.cc``: a 3x3 convolution and that pooling in one pass writing
  only the pooled maps and positions, the convolution at given positions,
  and its filter gradient (``tfmeta.models.conv_pool``, the first block).
- ``patch_moments.cc``: the mean and covariance of a map's 3x3 patches in
  one pass (``tfmeta.models.pool_first``, the first block's moments).
- ``squared_distances.cc``: squared distances between two sets of rows from
  their differences, and both gradients, without the ``[Q, N, d]``
  differences (``tfmeta.core.squared_distances``, Prototypical Networks).
- ``shared.h``: what the kernels share.

Every ``.cc`` here (with the ``.h`` they share) is built into one library
with the C++ compiler (``$CXX``, else ``g++``) and TensorFlow's own compile
and link flags into a cache folder (``$TFMETA_CACHE_DIR``, else
``~/.cache/tfmeta``), keyed by the sources, TensorFlow's version, the flags
and the machine (AVX-512 where the CPU has its F, BW, VL and DQ parts, else
AVX2 and FMA), then loaded with ``tf.load_op_library``. Where that fails (no
compiler, no headers) a warning says why and TensorFlow ops are used: the
same results (bit for bit for the pooling, to round-off for the rest: their
sums run in another order). ``tfmeta.runtime.configure(native_kernels=False)``
or ``TFMETA_NATIVE_KERNELS=0`` turns them off.

Only functions traced within ``native_kernels()`` use them (the learners'
meta-train steps), on CPU-only machines and outside XLA (``usable``):
exported and saved functions, which must load where the library is not
built (TF Serving included), get TensorFlow ops.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator

# Every source beside this file, in a fixed order, and the headers they
# share: the cache key hashes both.
_SOURCES = tuple(sorted(pathlib.Path(__file__).parent.glob("*.cc")))
_HEADERS = tuple(sorted(pathlib.Path(__file__).parent.glob("*.h")))
_lock = threading.Lock()
_loaded: dict[str, object] = {}
# How many traces of meta-train steps are under way (see native_kernels).
_scopes = [0]
_scopes_lock = threading.Lock()

log = logging.getLogger(__name__)


def enabled() -> bool:
    """The process-wide switch (``tfmeta.runtime.native_kernels_enabled``):
    on unless turned off there or by ``TFMETA_NATIVE_KERNELS=0``."""
    from tfmeta import runtime

    return runtime.native_kernels_enabled()


def cache_dir() -> pathlib.Path:
    root = os.environ.get("TFMETA_CACHE_DIR")
    if root:
        return pathlib.Path(root)
    return pathlib.Path.home() / ".cache" / "tfmeta"


# AVX-512 subsets the kernels' vector code uses where the CPU has them all
# (masked comparisons: byte positions from lanes in one instruction).
_AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")


def _arch_flags() -> list[str]:
    """Vector instructions this CPU has (the library is built where it runs)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    if not {"avx2", "fma"} <= flags:
                        return []
                    wide = set(_AVX512) <= flags
                    return ["-mavx2", "-mfma"] + (
                        [f"-m{f}" for f in _AVX512] if wide else []
                    )
    except OSError:
        pass
    return []


def _compiler() -> str:
    return os.environ.get("CXX", "g++")


def _build_command(output: pathlib.Path) -> list[str]:
    import tensorflow as tf

    return [
        _compiler(),
        "-O3",
        "-shared",
        "-fPIC",
        "-Wno-deprecated-declarations",
        *_arch_flags(),
        *tf.sysconfig.get_compile_flags(),
        *(str(source) for source in _SOURCES),
        "-o",
        str(output),
        *tf.sysconfig.get_link_flags(),
    ]


def library_path() -> pathlib.Path:
    """Where the compiled library for these sources, TensorFlow and machine
    lives."""
    import tensorflow as tf

    key = hashlib.sha256()
    for source in (*_SOURCES, *_HEADERS):
        key.update(source.read_bytes())
    key.update(tf.__version__.encode())
    key.update(" ".join(_build_command(pathlib.Path("out"))).encode())
    key.update(platform.machine().encode())
    return cache_dir() / "kernels" / key.hexdigest()[:16] / "tfmeta_kernels.so"


def _build(path: pathlib.Path) -> None:
    compiler = _compiler()
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler {compiler!r} on PATH (set $CXX)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: processes building at once each
    # write their own file, and a reader never sees a partial one.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(handle)
    try:
        result = subprocess.run(
            _build_command(pathlib.Path(partial)),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"{compiler} failed ({result.returncode}):\n{tail}")
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def library():
    """The loaded library, built and loaded once per process; None where the
    kernels are turned off or cannot be built (with a warning)."""
    if not enabled():
        return None
    with _lock:
        if "library" in _loaded:
            return _loaded["library"]
        import tensorflow as tf

        loaded = None
        try:
            path = library_path()
            if not path.exists():
                log.info("building the native kernels into %s", path)
                _build(path)
            loaded = tf.load_op_library(str(path))
        except Exception as error:  # noqa: BLE001 - any failure falls back
            log.warning(
                "native kernels unavailable, using TensorFlow ops (same "
                "results, slower steps): %s",
                error,
            )
        _loaded["library"] = loaded
        return loaded


def batch_norm_grad_grad_op():
    """The ``TfmetaBatchNormGradGrad`` op; None where ``library`` is."""
    loaded = library()
    return None if loaded is None else loaded.tfmeta_batch_norm_grad_grad


@contextlib.contextmanager
def native_kernels() -> Iterator[None]:
    """Functions traced within this context may run the native kernels. The
    learners trace their meta-train steps in it; everything else (exported
    and saved functions above all) gets TensorFlow ops. Counted process-wide,
    not per thread: tf.distribute traces replicas in threads."""
    with _scopes_lock:
        _scopes[0] += 1
    try:
        yield
    finally:
        with _scopes_lock:
            _scopes[0] -= 1


def tracing_for_xla() -> bool:
    """True while the current graph (or one it is nested in) is traced for XLA."""
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.ops import control_flow_util

    return control_flow_util.GraphOrParentsInXlaContext(tf_ops.get_default_graph())


def usable(*tensors):
    """The library where the function being traced may run it on
    ``tensors``: within ``native_kernels``, on a CPU-only machine, outside
    XLA (which has no kernel for its ops), every tensor float32 or float64
    and all of one dtype (the types the kernels are built for); None
    otherwise."""
    import tensorflow as tf

    dtypes = {tensor.dtype for tensor in tensors}
    if len(dtypes) > 1 or not dtypes <= {tf.float32, tf.float64}:
        return None
    if not _scopes[0] or tf.config.list_physical_devices("GPU"):
        return None
    if tracing_for_xla():
        return None
    return library()
