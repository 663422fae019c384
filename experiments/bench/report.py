"""What the benchmark prints: one line per measurement, the summary over
rounds, the tables and the notes on FLOPs; the JSON report. No TensorFlow."""

from __future__ import annotations

import json
import os
import pathlib
import statistics
from typing import Any

from . import flops, yardstick
from .settings import Settings

SPEED_NOTE = (
    "ms/step and compile s: median over rounds of each round's median; compile "
    "s is the first call (trace, graph optimization, one step) less a step; "
    "ratio: tfmeta's ms/step over the faster of the algorithm's yardsticks' "
    "(Prototypical Networks: PyTorch eager or torch.compile); "
    "peak RSS (each process's own) and growth: the largest over rounds. "
    "tfmeta's growth is over the peak RSS once model and learner are built "
    "(importing TensorFlow alone takes ~540 MiB); the yardstick's is over "
    "`import torch` alone."
)


def describe(result: dict[str, Any]) -> str:
    """One measurement in a line."""
    if result["impl"] == "tfmeta":
        name = f"tfmeta {result['algorithm']} xla={result['xla']}"
        if "onednn" in result:
            name += f" oneDNN={'on' if result['onednn'] else 'off'}"
        if result.get("cpu_threading") not in (None, "-"):
            name += f" threading={result['cpu_threading']}"
        if "malloc_arenas" in result:
            name += f" arenas={result['malloc_arenas']}"
        if "native_kernels" in result:
            name += f" native={'on' if result['native_kernels'] else 'off'}"
        extra = (
            f", compile {result['compile_s']:.1f} s, peak RSS "
            f"{result['peak_rss_mib']:.0f} MiB (+{result['rss_growth_mib']:.0f})"
        )
        if result.get("tensor_peak_mib") is not None:
            extra += f", peak tensor memory {result['tensor_peak_mib']:.0f} MiB"
        if result.get("loop_ms_per_step_median") is not None:
            extra += f", training loop {result['loop_ms_per_step_median']:.1f} ms/step"
    else:
        name = f"yardstick {result['yardstick']} (torch {result['torch']})"
        extra = f", peak RSS {result['peak_rss_mib']:.0f} MiB"
    return f"{name}: {result['ms_per_step_median']:.1f} ms/step{extra}"


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of the times (a step, compile, a training loop's
    step); the largest peak RSS."""
    summary = dict(runs[0])
    summary["rounds"] = len(runs)
    for key in ("ms_per_step_median", "compile_s", "loop_ms_per_step_median"):
        if summary.get(key) is not None:
            summary[key] = statistics.median(run[key] for run in runs)
    for key in ("peak_rss_mib", "rss_growth_mib"):
        if key in summary:
            summary[key] = max(run[key] for run in runs)
    return summary


def speed_rows(
    jobs: list[tuple[str, Any]],
    results: dict[Any, list[dict[str, Any]]],
    settings: Settings,
) -> list[dict[str, Any]]:
    """A summary row per job: tfmeta rows with their ratio to the fastest of
    the yardsticks that compute the same algorithm (``ratio_to`` names it),
    and achieved GFLOP/s where ``flops.step_flops`` counts the step (each
    implementation's own network: the ProtoNet yardstick pools rounding
    down). A tfmeta result that timed the training binary's loop
    (``loop_ms_per_step_median``) has that row right under it."""
    rows = []
    for kind, key in jobs:
        summary = summarize(results[(kind, key)])
        if kind == "tfmeta":
            algorithm, ceil_mode = key[0], True
            row = dict(summary, implementation="tfmeta", algorithm=algorithm)
            references = [
                summarize(results[("yardstick", stick)])
                for stick in yardstick.YARDSTICKS.get(algorithm, ())
                if results.get(("yardstick", stick))
            ]
            if references:
                fastest = min(references, key=lambda r: r["ms_per_step_median"])
                row["ratio"] = (
                    summary["ms_per_step_median"] / fastest["ms_per_step_median"]
                )
                row["ratio_to"] = fastest["yardstick"]
        else:
            algorithm, ceil_mode = key.algorithm, key.ceil_mode
            row = dict(
                summary,
                implementation=f"PyTorch {summary['torch']}",
                algorithm=algorithm,
                variant=key.variant,
                xla="-",
                compile_s=None,
            )
        count = flops.step_flops(algorithm, settings, ceil_mode)
        if count is not None:
            row["flops_per_step"] = count
            row["gflops_per_s"] = count / (row["ms_per_step_median"] / 1000) / 1e9
        rows.append(row)
        if kind == "tfmeta" and row.get("loop_ms_per_step_median") is not None:
            rows.append(training_loop_row(row))
    return rows


def training_loop_row(step_row: dict[str, Any]) -> dict[str, Any]:
    """The training binary's loop (experiments.train's Trainer on Omniglot
    episodes from files) beside its compiled step's row ``step_row``: its
    ms/step, ratio to the same yardstick, and ``loop_to_compiled``. Memory
    and compile time are the process's, on ``step_row``."""
    loop = step_row["loop_ms_per_step_median"]
    row = {
        "implementation": "tfmeta training loop",
        "algorithm": step_row["algorithm"],
        "xla": step_row["xla"],
        "ms_per_step_median": loop,
        "loop_steps": step_row.get("loop_steps"),
        "rounds": step_row["rounds"],
        "loop_to_compiled": loop / step_row["ms_per_step_median"],
    }
    if step_row.get("ratio") is not None:
        fastest_ms = step_row["ms_per_step_median"] / step_row["ratio"]
        row.update(ratio=loop / fastest_ms, ratio_to=step_row["ratio_to"])
    return row


def loop_notes(rows: list[dict[str, Any]]) -> list[str]:
    """A line per training-loop row, its ms/step over the compiled step's;
    and per tfmeta row whose worker timed no loop, why (``loop_skip``: no
    Omniglot files, say, with how to give them)."""
    lines = []
    for row in rows:
        if "loop_to_compiled" in row:
            lines.append(
                f"{row['implementation']} {row['algorithm']} xla={row['xla']} (the "
                "training binary's Trainer on Omniglot episodes from files): "
                f"{row['loop_to_compiled']:.2f}x the compiled step's ms/step "
                f"(median over {row['rounds']} round(s) of {row['loop_steps']} "
                "loop steps; target: within 10%, at most 1.10x)"
            )
        elif row["implementation"] == "tfmeta" and row.get("loop_skip"):
            lines.append(
                f"no training loop row for tfmeta {row['algorithm']} "
                f"xla={row['xla']}: {row['loop_skip']}"
            )
    return lines


def algorithm_cell(row: dict[str, Any]) -> str:
    """The algorithm, and for a yardstick which of its variants."""
    variant = row.get("variant")
    return f"{row['algorithm']} ({variant})" if variant else row["algorithm"]


def figure(value: float | None, digits: int) -> str:
    """A table cell: ``value`` to ``digits`` decimals, "-" for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def speed_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| implementation | algorithm | XLA | median ms/step | compile s "
        "| peak RSS MiB | RSS growth MiB | ratio to yardstick |"
    )
    lines = [header, "|" + " --- |" * 8]
    for row in rows:
        cells = [
            row["implementation"],
            algorithm_cell(row),
            row["xla"],
            f"{row['ms_per_step_median']:.1f}",
            figure(row.get("compile_s"), 1),
            figure(row.get("peak_rss_mib"), 0),
            figure(row.get("rss_growth_mib"), 0),
            figure(row.get("ratio"), 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flop_notes(
    rows: list[dict[str, Any]],
    settings: Settings,
    matmul_gflops: float | None = None,
    fma_gflops: float | None = None,
) -> list[str]:
    """Lines on the FLOP count of each counted algorithm among ``rows`` and,
    per row that has one, the share of this CPU's peak (stored in the row as
    ``fraction_of_peak``): the highest of the listed peak
    (``flops.cpu_peak_gflops``), ``matmul_gflops``, the rate a large matmul
    reached, and ``fma_gflops``, the rate of fused multiply-adds on registers
    (``roof``)."""
    counted = dict.fromkeys(row["algorithm"] for row in rows if "flops_per_step" in row)
    lines = [count_note(algorithm, settings) for algorithm in counted]
    listed = flops.cpu_peak_gflops()
    source = flops.peak_source(listed, matmul_gflops, fma_gflops)
    peak = source[0] if source else None
    if listed:
        lines.append(
            f"CPU FP32 peak ~{listed:.0f} GFLOP/s listed ({len(os.sched_getaffinity(0))} "
            "cores x listed clock x FLOPs per cycle of its vector units)"
        )
    if matmul_gflops:
        lines.append(
            f"a {flops.MATMUL_SIZE}x{flops.MATMUL_SIZE} float32 matmul reached "
            f"{matmul_gflops:.0f} GFLOP/s (median over rounds)"
        )
    if fma_gflops:
        lines.append(
            f"fused multiply-adds on registers, one thread per core, reached "
            f"{fma_gflops:.0f} GFLOP/s (best over rounds)"
        )
    if sum(bool(rate) for rate in (listed, matmul_gflops, fma_gflops)) > 1:
        lines.append(f"shares are of the highest, {source[1]}: {peak:.0f} GFLOP/s")
    for row in rows:
        if "gflops_per_s" in row:
            share = f", {100 * row['gflops_per_s'] / peak:.0f}% of peak" if peak else ""
            row["fraction_of_peak"] = row["gflops_per_s"] / peak if peak else None
            lines.append(
                f"  {row['implementation']} {algorithm_cell(row)}"
                f"{'' if row['xla'] == '-' else ' xla=' + row['xla']}: "
                f"{row['gflops_per_s']:.2f} GFLOP/s achieved{share}"
            )
    return lines


def count_note(algorithm: str, settings: Settings) -> str:
    """How ``flops.step_flops`` counts ``algorithm``'s step, in a line."""
    count = flops.step_flops(algorithm, settings)
    head = f"{flops.COUNTED[algorithm]}: ~{count / 1e9:.2f} GFLOP per step"
    if algorithm == "protonet":
        embedding = flops.forward_multiply_adds(0, settings.filters)
        floor = flops.step_flops(algorithm, settings, ceil_mode=False)
        images = settings.n_way * (settings.k_shot + settings.q_query)
        batch = settings.meta_batch_size
        episodes = "1 episode" if batch == 1 else f"{batch} episodes each"
        return (
            f"{head} ({episodes} of N*(K+Q) = {images} images), counting the "
            f"embedding's conv multiply-adds (2 FLOPs each, {embedding:,} per "
            "image; the head is unused, prototypes and distances are not "
            "counted) with one forward and one backward: "
            f"{flops.PROTONET_PASSES}x the forward, less the first layer's input "
            "gradient. The yardstick's max-pooling "
            f"rounds down (28 -> 14 -> 7 -> 3): ~{floor / 1e9:.2f} GFLOP for its rows."
        )
    multiply_adds = flops.forward_multiply_adds(settings.n_way, settings.filters)
    return (
        f"{head}, counting conv and dense multiply-adds of the forward pass (2 "
        f"FLOPs each, {multiply_adds:,} per example): each inner step's gradient "
        "(forward, filter and input gradients: 3x) and its Hessian-vector "
        "product (the adjoint of each of those ops for each of its two inputs: "
        f"6x), {flops.SECOND_ORDER_SUPPORT_PASSES}x the support forward per inner "
        f"step, {flops.QUERY_PASSES}x the query forward, the first layer less "
        "(its input is the data: no input gradient). --mode=flops compares the "
        "count with the convolutions the step runs."
    )


def memory_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| implementation | inner steps | recompute | ms/step | compile s "
            "| peak RSS MiB | RSS growth MiB | peak tensor MiB |"
        ),
        "|" + " --- |" * 8,
    ]
    for row in rows:
        lines.append(
            f"| {row['implementation']} | {row['inner_steps']} | "
            f"{'yes' if row.get('recompute') else 'no'} | {row['ms_per_step_median']:.1f} | "
            f"{figure(row.get('compile_s'), 1)} | "
            f"{row['peak_rss_mib']:.0f} | {row['rss_growth_mib']:.0f} | "
            f"{figure(row.get('tensor_peak_mib'), 0)} |"
        )
    return "\n".join(lines)


def write_json(path: str | None, report: dict[str, Any]) -> None:
    if path:
        pathlib.Path(path).write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")
