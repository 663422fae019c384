"""Native CPU kernels, compiled on first use against the installed TensorFlow.

``batch_norm_grad_grad.cc`` is the gradient of training-mode batch norm's
backward pass (what second-order MAML evaluates once per batch-norm layer and
inner step) in two passes over the data, where the same closed form written
with TensorFlow ops takes about twenty. It is built with the C++ compiler
(``$CXX``, else ``g++``) and TensorFlow's own compile and link flags into a
cache folder (``$TFMETA_CACHE_DIR``, else ``~/.cache/tfmeta``), keyed by the
source, TensorFlow's version, the flags and the machine, then loaded with
``tf.load_op_library``. Where that fails (no compiler, no headers) a warning
says why and the TensorFlow-op form is used: results are the same to float32
round-off. ``tfmeta.runtime.configure(native_kernels=False)`` or
``TFMETA_NATIVE_KERNELS=0`` turns the native kernel off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading

_SOURCE = pathlib.Path(__file__).with_name("batch_norm_grad_grad.cc")
_lock = threading.Lock()
_loaded: dict[str, object] = {}

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


def _arch_flags() -> list[str]:
    """Vector instructions this CPU has (the library is built where it runs)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= flags else []
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
        str(_SOURCE),
        "-o",
        str(output),
        *tf.sysconfig.get_link_flags(),
    ]


def library_path() -> pathlib.Path:
    """Where the compiled kernel for this source, TensorFlow and machine lives."""
    import tensorflow as tf

    key = hashlib.sha256()
    key.update(_SOURCE.read_bytes())
    key.update(tf.__version__.encode())
    key.update(" ".join(_build_command(pathlib.Path("out"))).encode())
    key.update(platform.machine().encode())
    return cache_dir() / "kernels" / key.hexdigest()[:16] / "batch_norm_grad_grad.so"


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


def batch_norm_grad_grad_op():
    """The ``TfmetaBatchNormGradGrad`` op, built and loaded once per process;
    None where it is turned off or cannot be built (with a warning)."""
    if not enabled():
        return None
    with _lock:
        if "op" in _loaded:
            return _loaded["op"]
        import tensorflow as tf

        op = None
        try:
            path = library_path()
            if not path.exists():
                log.info("building the native batch-norm kernel into %s", path)
                _build(path)
            op = tf.load_op_library(str(path)).tfmeta_batch_norm_grad_grad
        except Exception as error:  # noqa: BLE001 - any failure falls back
            log.warning(
                "native batch-norm kernel unavailable, using TensorFlow ops "
                "(same results, slower second-order steps): %s",
                error,
            )
        _loaded["op"] = op
        return op
