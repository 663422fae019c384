"""What this CPU's FP32 units reach, the roof a step's GFLOP/s are read
against (``flops.peak_gflops``) where the listed clock understates it: a
large matmul in a process of its own (``--matmul``, one JSON line), and
fused multiply-adds on registers (``fma_loop.cc``, built here with the C++
compiler), the vector units' own rate with no memory traffic.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time
from typing import Any

from . import flops

REPEATS = 20
FMA_SOURCE = pathlib.Path(__file__).with_name("fma_loop.cc")
# Each of the FMA loop's three timings runs every core this long.
FMA_SECONDS = 1.0


def measure_matmul(n: int = flops.MATMUL_SIZE) -> dict[str, Any]:
    """Median and best GFLOP/s of an ``n`` x ``n`` float32 matmul over
    ``REPEATS`` calls after two warm-up calls, every core on the one op."""
    from tfmeta import runtime

    runtime.configure(cpu_threading="ops")
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[0, 1])
    b = tf.random.stateless_normal([n, n], seed=[0, 2])
    product = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    for _ in range(2):
        product(a, b).numpy()
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        product(a, b).numpy()
        seconds.append(time.perf_counter() - start)
    rate = flops.matmul_flops(n) / 1e9
    return {
        "matmul_n": n,
        "matmul_gflops_median": rate / statistics.median(seconds),
        "matmul_gflops_best": rate / min(seconds),
    }


def _run(command: list[str]) -> str:
    """``command``'s standard output; RuntimeError, in one line, where it
    cannot start or fails."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=300, check=False
        )
    except OSError as error:
        raise RuntimeError(f"{command[0]}: {error.strerror}") from error
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(
            f"{os.path.basename(command[0])} failed ({done.returncode}): {last}"
        )
    return done.stdout


# The FMA loop built by each compiler, once per process (a benchmark times it
# every round); the folders go when the process ends.
_fma_binaries: dict[str, str] = {}


def _fma_binary(compiler: str) -> str:
    if compiler not in _fma_binaries:
        folder = tempfile.mkdtemp(prefix="tfmeta-fma-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        binary = os.path.join(folder, "fma_loop")
        flags = ["-O2", "-march=native", "-ffp-contract=fast", "-pthread"]
        _run([compiler, *flags, str(FMA_SOURCE), "-o", binary])
        _fma_binaries[compiler] = binary
    return _fma_binaries[compiler]


def measure_fma(seconds: float = FMA_SECONDS) -> dict[str, Any]:
    """The best GFLOP/s of three timings of ``fma_loop.cc``, one thread per
    core, built with ``$CXX`` (else ``g++``) for this CPU (``-march=native``).
    RuntimeError, in one line, where it cannot be built or run."""
    binary = _fma_binary(os.environ.get("CXX", "g++"))
    threads = len(os.sched_getaffinity(0))
    result = json.loads(_run([binary, str(threads), str(seconds)]))
    return {"fma_threads": result["fma_threads"], "fma_gflops": result["fma_gflops"]}
