"""The FP32 rate this CPU reaches on a large matmul, in a process of its
own (``--matmul``, one JSON line): the roof a step's GFLOP/s are read
against where the listed clock understates the CPU (``flops.peak_gflops``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from . import flops

REPEATS = 20


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
