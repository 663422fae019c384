"""FLOPs of a second-order MAML meta-step and of a Prototypical Networks
step on the max-pool conv net, and this CPU's FP32 peak: what the
benchmark's GFLOP/s figures are counted against (the highest of the peak
from the CPU's listed clock and vector units, what a large matmul reaches
here and what fused multiply-adds on registers reach: ``peak_gflops``)."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from .yardstick import FILTERS, IMAGE_SHAPE

# Forward passes' worth of work, per layer and example. Each layer's
# multiply-adds M run in a forward op (M), and its gradient adds the filter
# gradient (M) and the input gradient (M), which the first layer skips: its
# input is the data. Second order differentiates each inner step's gradient
# again (a Hessian-vector product, reverse over reverse): the adjoint of each
# of those ops costs M per input that carries a gradient (two inputs each;
# the first layer's forward and filter gradient have one). Per inner step on
# the support set: 3 + 6 = 9 M, the first layer 2 + 2 = 4 M; on the query set
# one gradient: 3 M, the first layer 2 M. These are the convolutions a
# second-order step runs (``experiments.bench.executed`` sums them from
# oneDNN's log; PyTorch's ``FlopCounterMode`` finds the same for its step).
SECOND_ORDER_SUPPORT_PASSES = 9
QUERY_PASSES = 3
# Prototypical Networks: one forward and one backward of every image.
PROTONET_PASSES = 3
# What the first layer skips of those passes, having no input gradient
# (``QUERY_PASSES`` and ``PROTONET_PASSES`` are both one gradient).
FIRST_LAYER_SAVES = {SECOND_ORDER_SUPPORT_PASSES: 5, QUERY_PASSES: 1}
# The algorithms whose step is counted, by the name the notes give them.
COUNTED = {"maml": "second-order MAML", "protonet": "Prototypical Networks"}


def layer_multiply_adds(
    n_way: int,
    filters: int = FILTERS,
    depth: int = 4,
    input_shape: tuple[int, int, int] = IMAGE_SHAPE,
    pooling: str = "max",
    ceil_mode: bool = True,
) -> list[int]:
    """Multiply-adds of each conv layer and then the dense head for one
    example through ``conv4`` (``n_way=0``: the conv blocks alone, the
    embedding before the head, no head entry).

    A 3x3 'same' convolution counts 9 * C_in * C_out per output pixel (padding
    included); batch norm, ReLU, pooling and biases are not counted. 2x2
    max-pooling rounds up (``ceil_mode``, tfmeta's 'same' pooling) or down
    (PyTorch's ``nn.MaxPool2d(2)``).
    """
    height, width, channels = input_shape
    layers = []
    for _ in range(depth):
        if pooling == "stride":  # stride-2 convolution
            height, width = -(-height // 2), -(-width // 2)
        layers.append(height * width * filters * channels * 9)
        if pooling == "max":  # 2x2 max-pooling after the block
            rounding = 1 if ceil_mode else 0
            height, width = (height + rounding) // 2, (width + rounding) // 2
        channels = filters
    features = filters if pooling == "stride" else height * width * filters
    return layers + ([features * n_way] if n_way else [])


def forward_multiply_adds(n_way: int, filters: int = FILTERS, **network) -> int:
    """Multiply-adds of one example's forward pass (``layer_multiply_adds``
    summed; the same arguments)."""
    return sum(layer_multiply_adds(n_way, filters, **network))


def pass_multiply_adds(passes: int, layers: list[int]) -> int:
    """``passes`` forwards' worth of ``layers``' multiply-adds less what the
    first layer skips without an input gradient (``FIRST_LAYER_SAVES``)."""
    return passes * sum(layers) - FIRST_LAYER_SAVES[passes] * layers[0]


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
    support set per inner step and ``QUERY_PASSES`` on the query set, the
    first layer less (``pass_multiply_adds``).
    """
    layers = layer_multiply_adds(n_way, filters)
    per_task = inner_steps * n_way * k_shot * pass_multiply_adds(
        SECOND_ORDER_SUPPORT_PASSES, layers
    ) + n_way * q_query * pass_multiply_adds(QUERY_PASSES, layers)
    return meta_batch_size * 2 * per_task


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
    query images, the first layer's input gradient left out. The prototypes
    and distances (N*Q*N*d multiply-adds) are not counted: a fraction of a
    percent at 60-way.
    """
    layers = layer_multiply_adds(0, filters, ceil_mode=ceil_mode)
    images = n_way * (k_shot + q_query)
    return meta_batch_size * 2 * images * pass_multiply_adds(PROTONET_PASSES, layers)


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
    two FMA pipes per core). AMD family 25 (Zen 3 and Zen 4) has 256-bit FMA
    pipes: Zen 4 runs AVX-512 on them in two halves, 32 FLOPs per cycle.
    None where /proc/cpuinfo gives no clock. The clock is the one listed,
    which can be below the clock a busy core runs at: ``roof`` measures what
    the CPU reaches."""
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "cpu MHz" not in fields:
        return None
    flag_set = set(fields.get("flags", "").split())
    zen_3_or_4 = (
        fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25"
    )
    if "avx512f" in flag_set and not zen_3_or_4:
        per_cycle = 64
    elif "avx2" in flag_set and "fma" in flag_set:
        per_cycle = 32
    else:
        per_cycle = 8
    cores = cores or len(os.sched_getaffinity(0))
    return cores * float(fields["cpu MHz"]) * per_cycle / 1000


# The matmul that measures the CPU's reachable rate: n x n by n x n, float32.
MATMUL_SIZE = 2048


def matmul_flops(n: int = MATMUL_SIZE) -> int:
    return 2 * n**3


# What each rate ``peak_gflops`` takes is called in the benchmark's notes.
PEAK_SOURCES = ("the listed peak", "the matmul's rate", "the FMA loop's rate")


def peak_source(
    listed: float | None, matmul: float | None, fma: float | None = None
) -> tuple[float, str] | None:
    """The highest of the listed peak (``cpu_peak_gflops``), the measured
    matmul rate and the FMA loop's rate (``roof``), and its name
    (``PEAK_SOURCES``); None where none is known."""
    known = [
        (rate, name) for rate, name in zip((listed, matmul, fma), PEAK_SOURCES) if rate
    ]
    return max(known, key=lambda source: source[0]) if known else None


def peak_gflops(
    listed: float | None, matmul: float | None, fma: float | None = None
) -> float | None:
    """The peak a step's rate is a share of: the highest of the three
    (``peak_source``), so a CPU that runs above its listed clock is not
    flattered."""
    source = peak_source(listed, matmul, fma)
    return source[0] if source else None
