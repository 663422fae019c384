"""The FLOPs a tfmeta step executes, read from oneDNN's log of every
primitive it runs, beside what ``flops`` counts for the step.

``--mode=flops`` runs each counted algorithm (``flops.COUNTED``) in a child
with ``ONEDNN_VERBOSE=1``: the child traces the step, then runs it once more
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


def step_flops(log: str) -> dict[str, int]:
    """FLOPs by primitive (``convolution forward_training`` and the like,
    ``matmul``) of the lines between the two markers of ``log``; ValueError
    unless it holds exactly two."""
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
    totals: dict[str, int] = {}
    for fields in executed[marks[0] + 1 : marks[1]]:
        kind, descriptor = fields[5], fields[-2]
        if kind == "convolution":
            name, multiply_adds = (
                f"convolution {fields[7]}",
                convolution_multiply_adds(descriptor),
            )
        elif kind in ("matmul", "gemm_api"):
            name, multiply_adds = "matmul", matmul_multiply_adds(descriptor)
        elif kind == "inner_product":
            name, multiply_adds = "matmul", inner_product_multiply_adds(descriptor)
        else:
            continue
        totals[name] = totals.get(name, 0) + 2 * multiply_adds
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

    from . import flops, learners

    runtime.configure(jit_compile=False, tasks_per_step=settings.meta_batch_size)
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
    """Lines comparing the count with what the child's step executed."""
    name = result["algorithm"]
    if not result["onednn"]:
        return [f"{name}: oneDNN is off here, so no log of executed primitives to read"]
    executed = step_flops(log)
    convolutions = sum(v for k, v in executed.items() if k.startswith("convolution"))
    counted = result["counted_flops"]
    lines = [
        (
            f"{name}: counted {counted / 1e9:.4f} GFLOP per step; executed "
            f"convolutions {convolutions / 1e9:.4f} ({convolutions / counted:.4f} "
            f"of the count), matmuls {executed.get('matmul', 0) / 1e9:.4f}"
        )
    ]
    for kind in sorted(executed):
        if kind.startswith("convolution"):
            lines.append(f"  {kind}: {executed[kind] / 1e9:.4f} GFLOP")
    return lines
