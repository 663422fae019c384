"""FLOPs of a second-order MAML meta-step and of a Prototypical Networks
step on the max-pool conv net, and this CPU's FP32 peak: what the
benchmark's GFLOP/s figures are counted against."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from .yardstick import FILTERS, IMAGE_SHAPE

# Forward passes' worth of work per example (backward ~2x forward):
# support: forward + backward of each inner step, and for second order another
# forward + backward through that step; query: forward + backward once.
SECOND_ORDER_SUPPORT_PASSES = 6
QUERY_PASSES = 3
# Prototypical Networks: one forward and one backward of every image.
PROTONET_PASSES = 3
# The algorithms whose step is counted, by the name the notes give them.
COUNTED = {"maml": "second-order MAML", "protonet": "Prototypical Networks"}


def forward_multiply_adds(
    n_way: int,
    filters: int = FILTERS,
    depth: int = 4,
    input_shape: tuple[int, int, int] = IMAGE_SHAPE,
    pooling: str = "max",
    ceil_mode: bool = True,
) -> int:
    """Multiply-adds of conv and dense layers for one example through ``conv4``
    (``n_way=0``: the conv blocks alone, the embedding before the head).

    A 3x3 'same' convolution counts 9 * C_in * C_out per output pixel (padding
    included); batch norm, ReLU, pooling and biases are not counted. 2x2
    max-pooling rounds up (``ceil_mode``, tfmeta's 'same' pooling) or down
    (PyTorch's ``nn.MaxPool2d(2)``).
    """
    height, width, channels = input_shape
    total = 0
    for _ in range(depth):
        if pooling == "stride":  # stride-2 convolution
            height, width = -(-height // 2), -(-width // 2)
        total += height * width * filters * channels * 9
        if pooling == "max":  # 2x2 max-pooling after the block
            rounding = 1 if ceil_mode else 0
            height, width = (height + rounding) // 2, (width + rounding) // 2
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


def protonet_step_flops(
    meta_batch_size: int,
    n_way: int,
    k_shot: int,
    q_query: int,
    filters: int = FILTERS,
    ceil_mode: bool = True,
) -> int:
    """FLOPs (2 per multiply-add) of one Prototypical Networks step.

    Per episode: ``PROTONET_PASSES`` forward passes' worth of the embedding
    f_phi (the conv blocks; the head is not used) on the N*K support and N*Q
    query images. The prototypes and distances (N*Q*N*d multiply-adds) are
    not counted: a fraction of a percent at 60-way.
    """
    per_example = 2 * forward_multiply_adds(0, filters, ceil_mode=ceil_mode)
    images = n_way * (k_shot + q_query)
    return meta_batch_size * PROTONET_PASSES * images * per_example


def step_flops(algorithm: str, settings: Any, ceil_mode: bool = True) -> int | None:
    """FLOPs of one step of ``algorithm`` at ``settings`` (``Settings``) with
    max-pooling rounding up or down; None for an algorithm not counted."""
    task = (settings.meta_batch_size, settings.n_way, settings.k_shot, settings.q_query)
    if algorithm == "maml":
        return maml_step_flops(*task, settings.inner_steps, settings.filters)
    if algorithm == "protonet":
        return protonet_step_flops(*task, settings.filters, ceil_mode)
    return None


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
