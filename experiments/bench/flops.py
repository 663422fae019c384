"""FLOPs of a second-order MAML meta-step on the max-pool conv net, and this
CPU's FP32 peak: what the benchmark's GFLOP/s figures are counted against."""

from __future__ import annotations

import os
import pathlib

from .yardstick import FILTERS, IMAGE_SHAPE

# Forward passes' worth of work per example (backward ~2x forward):
# support: forward + backward of each inner step, and for second order another
# forward + backward through that step; query: forward + backward once.
SECOND_ORDER_SUPPORT_PASSES = 6
QUERY_PASSES = 3


def forward_multiply_adds(
    n_way: int,
    filters: int = FILTERS,
    depth: int = 4,
    input_shape: tuple[int, int, int] = IMAGE_SHAPE,
    pooling: str = "max",
) -> int:
    """Multiply-adds of conv and dense layers for one example through ``conv4``.

    A 3x3 'same' convolution counts 9 * C_in * C_out per output pixel (padding
    included); batch norm, ReLU, pooling and biases are not counted.
    """
    height, width, channels = input_shape
    total = 0
    for _ in range(depth):
        if pooling == "stride":  # stride-2 convolution
            height, width = -(-height // 2), -(-width // 2)
        total += height * width * filters * channels * 9
        if pooling == "max":  # 2x2 'same' max-pooling after the block
            height, width = -(-height // 2), -(-width // 2)
        channels = filters
    features = filters if pooling == "stride" else height * width * filters
    return total + features * n_way


def maml_step_flops(
    meta_batch_size: int,
    n_way: int,
    k_shot: int,
    q_query: int,
    inner_steps: int,
    filters: int = FILTERS,
) -> int:
    """FLOPs (2 per multiply-add) of one second-order MAML meta-step.

    Per task: ``SECOND_ORDER_SUPPORT_PASSES`` forward passes' worth on the
    support set per inner step and ``QUERY_PASSES`` on the query set.
    """
    per_example = 2 * forward_multiply_adds(n_way, filters)
    passes = (
        SECOND_ORDER_SUPPORT_PASSES * inner_steps * n_way * k_shot
        + QUERY_PASSES * n_way * q_query
    )
    return meta_batch_size * passes * per_example


def cpu_peak_gflops(
    cpuinfo: str | None = None, cores: int | None = None
) -> float | None:
    """FP32 peak of this CPU: cores x clock x FLOPs per cycle from the vector
    units /proc/cpuinfo lists (AVX-512: 64, AVX2 with FMA: 32, else SSE: 8;
    two FMA pipes per core). None where /proc/cpuinfo gives no clock."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    mhz, flag_set = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz" and mhz is None:
            mhz = float(value)
        elif key.strip() == "flags" and not flag_set:
            flag_set = set(value.split())
    if mhz is None:
        return None
    if "avx512f" in flag_set:
        per_cycle = 64
    elif "avx2" in flag_set and "fma" in flag_set:
        per_cycle = 32
    else:
        per_cycle = 8
    cores = cores or len(os.sched_getaffinity(0))
    return cores * mhz * per_cycle / 1000
