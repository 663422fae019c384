"""The FLOPs a tfmeta step executes, read from oneDNN's log of every
primitive it runs, beside what ``flops`` counts for the step.

``--mode=flops`` runs each counted algorithm (``flops.COUNTED``) in a child
with ``ONEDNN_VERBOSE=1`` and the native kernels off (``tfmeta.models.
kernels``: the first block's convolution would not be in the log; the step
then runs the same functions on TensorFlow's ops): the child traces the step, then runs it once more
between two marker convolutions of a shape no step uses (they go through the
same log, so the step's lines are exactly those between them), and prints one
JSON line. The parent sums the step's convolutions, matmuls and inner
products from their problem descriptors (2 FLOPs per multiply-add). Where
oneDNN is off there is no log to read: the child says so.
"""

from __future__ import annotations

import math
import re
from typing import Any

# The marker: a 1x1 convolution of a [1, 11, 13, 3] map to 7 channels.
MARKER_SHAPE = (1, 11, 13, 3)
MARKER_CHANNELS = 7
MARKER_DESCRIPTOR = "mb1_ic3oc7_ih11oh11kh1sh1dh0ph0_iw13ow13kw1sw1dw0pw0"

# Primitive problems listed by time under the FLOP comparison.
TOP_PRIMITIVES = 12

_FIELD = re.compile(r"([a-z]+)(\d+)")


def convolution_multiply_adds(descriptor: str) -> int:
    """Multiply-adds of a convolution from oneDNN's problem descriptor, e.g.
    ``mb5_ic64oc64_ih14oh14kh3sh1dh0ph1_iw14ow14kw3sw1dw0pw1`` (``g``: groups;
    depth, where given, as height and width). Its forward, data gradient and
    weight gradient each do this many."""
    sizes = {key: int(value) for key, value in _FIELD.findall(descriptor)}
    groups = sizes.get("g", 1)
    spatial = math.prod(
        sizes.get(f"o{axis}", 1) * sizes.get(f"k{axis}", 1) for axis in "dhw"
    )
    return sizes["mb"] * sizes["oc"] * (sizes["ic"] // groups) * spatial


def matmul_multiply_adds(descriptor: str) -> int:
    """Multiply-adds of a matmul from its descriptor ``AxB:BxC``, batch
    dimensions first (``5x1x5:5x5x1``: 5 products of 1x5 by 5x1)."""
    source, weights = (
        [int(size) for size in part.split("x")] for part in descriptor.split(":")[:2]
    )
    batch = math.prod(max(a, b) for a, b in zip(source[:-2], weights[:-2]))
    return batch * source[-2] * source[-1] * weights[-1]


def inner_product_multiply_adds(descriptor: str) -> int:
    """Multiply-adds of an inner product from ``mb5ic256oc5``."""
    sizes = {key: int(value) for key, value in _FIELD.findall(descriptor)}
    return sizes["mb"] * sizes["ic"] * sizes["oc"]


def step_primitives(log: str) -> dict[tuple[str, str], dict[str, float]]:
    """The primitives run between the two markers of ``log``, by kind (with
    the pass for a convolution) and problem (the descriptor without its
    batch size): ``flops`` (2 per multiply-add; 0 where not counted),
    ``ms`` (oneDNN's own time) and ``calls``. ValueError unless the log
    holds exactly two markers."""
    executed: list[list[str]] = []
    for line in log.splitlines():
        fields = line.split(",")
        if len(fields) > 6 and fields[2:5] == ["primitive", "exec", "cpu"]:
            executed.append(fields)
    marks = [
        index
        for index, fields in enumerate(executed)
        if fields[5] == "convolution" and fields[-2] == MARKER_DESCRIPTOR
    ]
    if len(marks) != 2:
        raise ValueError(
            f"expected 2 marker convolutions in the log, found {len(marks)}"
        )
    primitives: dict[tuple[str, str], dict[str, float]] = {}
    for fields in executed[marks[0] + 1 : marks[1]]:
        kind, descriptor = fields[5], fields[-2]
        multiply_adds = 0
        if kind == "convolution":
            kind = f"convolution {fields[7]}"
            multiply_adds = convolution_multiply_adds(descriptor)
            descriptor = re.sub(r"mb\d+_", "", descriptor)
        elif kind in ("matmul", "gemm_api"):
            kind, multiply_adds = "matmul", matmul_multiply_adds(descriptor)
        elif kind == "inner_product":
            kind, multiply_adds = "matmul", inner_product_multiply_adds(descriptor)
            descriptor = re.sub(r"mb\d+", "", descriptor)
        else:
            descriptor = ""
        entry = primitives.setdefault(
            (kind, descriptor), {"flops": 0, "ms": 0.0, "calls": 0}
        )
        entry["flops"] += 2 * multiply_adds
        entry["ms"] += float(fields[-1])
        entry["calls"] += 1
    return primitives


def step_flops(log: str) -> dict[str, int]:
    """FLOPs by primitive kind (``convolution forward_training`` and the
    like, ``matmul``) of the step in ``log`` (``step_primitives``)."""
    return _flops_by_kind(step_primitives(log))


def _flops_by_kind(
    primitives: dict[tuple[str, str], dict[str, float]],
) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (kind, _), entry in primitives.items():
        if entry["flops"]:
            totals[kind] = totals.get(kind, 0) + int(entry["flops"])
    return totals


def _marker() -> None:
    import tensorflow as tf

    inputs = tf.ones(MARKER_SHAPE)
    tf.nn.conv2d(inputs, tf.ones([1, 1, MARKER_SHAPE[-1], MARKER_CHANNELS]), 1, "VALID")


def run_counted_step(configuration: Any, settings: Any) -> dict[str, Any]:
    """In the child (``ONEDNN_VERBOSE=1`` in its environment): trace
    ``configuration``'s step, run it once between the markers, and return
    what the parent reports beside the log."""
    from tfmeta import runtime

    from . import flops, learners, worker

    worker.configure_runtime(settings)
    episode = learners.episode(configuration)
    learner = learners.build_learner(configuration, settings)
    learner.meta_train_step(episode)["loss"].numpy()
    _marker()
    learner.meta_train_step(episode)["loss"].numpy()
    _marker()
    return {
        "algorithm": configuration.algorithm,
        "onednn": runtime.onednn_enabled(),
        "counted_flops": flops.step_flops(configuration.algorithm, settings),
    }


def report(result: dict[str, Any], log: str) -> list[str]:
    """Lines comparing the count with what the child's step executed, then
    where oneDNN's time in the step went."""
    name = result["algorithm"]
    if not result["onednn"]:
        return [f"{name}: oneDNN is off here, so no log of executed primitives to read"]
    primitives = step_primitives(log)
    executed = _flops_by_kind(primitives)
    total = sum(executed.values())
    matmuls = executed.get("matmul", 0)
    counted = result["counted_flops"]
    total_ms = sum(entry["ms"] for entry in primitives.values())
    lines = [
        (
            f"{name}: counted {counted / 1e9:.4f} GFLOP per step; executed "
            f"{total / 1e9:.4f} ({total / counted:.4f} of the count): convolutions "
            f"{(total - matmuls) / 1e9:.4f}, matmuls {matmuls / 1e9:.4f} (the "
            "native kernels off: every convolution in oneDNN's log)"
        ),
        (
            f"  oneDNN's own time in the step's primitives: {total_ms:.1f} ms (calls "
            "on different threads add up); the most:"
        ),
    ]
    ranked = sorted(primitives.items(), key=lambda item: -item[1]["ms"])
    for (kind, problem), entry in ranked[:TOP_PRIMITIVES]:
        rate = ""
        if entry["flops"] and entry["ms"]:
            rate = f", {entry['flops'] / entry['ms'] / 1e6:.1f} GFLOP/s"
        label = f"{kind} {problem}".strip()
        lines.append(
            f"  {entry['ms']:8.1f} ms {100 * entry['ms'] / total_ms:5.1f}%  {label} "
            f"({entry['calls']} calls{rate})"
        )
    return lines
