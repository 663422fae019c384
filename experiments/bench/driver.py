"""The benchmark's driver: it checks every configuration in one child
process, then runs each measurement in a process of its own, interleaved
over rounds, and hands the figures to ``report``.

It loads no TensorFlow: where a child's peak RSS falls back to
``ru_maxrss`` (no /proc), it starts from its parent's at exec. Children run
this package's binary again (``--plan``, ``--worker=ALGORITHM``):
``experiments.benchmark`` from a checkout's root,
``tfmeta.experiments.benchmark`` where it is installed. The yardsticks and
``import torch`` run under ``memory``'s wrapper, which reports the process's
own high-water mark.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
from typing import Any

from . import executed, flops, memory, report, roof, yardstick
from .settings import Options, Settings

REPO = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = __package__.rpartition(".")[0]
BINARY = f"{EXPERIMENTS}.benchmark"
CHECKOUT = REPO if EXPERIMENTS == "experiments" else None
DEFAULT_YARDSTICK = str(REPO.parent / "shared" / "bench" / "torch_maml_reference.py")
DEFAULT_PROTONET_YARDSTICK = str(
    REPO.parent / "shared" / "bench" / "torch_protonet_reference.py"
)


def last_json_line(output: str) -> dict[str, Any]:
    """RuntimeError where there is none (ValueError is a user's mistake)."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise RuntimeError(f"no JSON line in the output:\n{output[-2000:]}") from error


def run_json(
    command: list[str], what: str, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """The last JSON line ``command`` prints; RuntimeError if it fails."""
    return last_json_line(run_output(command, what, extra_env))


def run_output(
    command: list[str], what: str, extra_env: dict[str, str] | None = None
) -> str:
    """What ``command`` prints; RuntimeError if it fails."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    done = subprocess.run(
        command, check=False, cwd=CHECKOUT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def plan(settings: Settings, options: Options) -> list[dict[str, Any]]:
    """Each algorithm to time, checked by its own rules in a child process;
    ValueError with the first setting refused. Prints what each runs as."""
    command = [sys.executable, "-m", BINARY, "--plan", *settings.to_args()]
    if options.algorithms:
        command.append(f"--algorithms={','.join(options.algorithms)}")
    result = run_json(command, "the check of the configurations")
    if "error" in result:
        raise ValueError(result["error"])
    planned = []
    for entry in result["algorithms"]:
        name = entry["algorithm"]
        if entry["skip"]:
            print(f"{name}: skipped, {entry['skip']}", flush=True)
            continue
        print(entry["description"], flush=True)
        for note in entry["notes"]:
            print(f"  {name}: {note}", flush=True)
        planned.append(entry)
    return planned


def tfmeta_run(
    algorithm: str, settings: Settings, allocator_stats: bool = False
) -> dict[str, Any]:
    command = [sys.executable, "-m", BINARY, f"--worker={algorithm}"]
    command += settings.to_args()
    extra_env = {"TF_CPU_ALLOCATOR_USE_BFC": "true"} if allocator_stats else None
    xla = "on" if settings.jit_compile else "off"
    return run_json(command, f"tfmeta {algorithm} xla={xla}", extra_env)


def yardstick_run(
    stick: yardstick.Yardstick,
    settings: Settings,
    options: Options,
    inner_lr: float | None,
) -> dict[str, Any]:
    """``stick`` with the settings and alpha of the tfmeta algorithm it
    computes, under ``memory``'s wrapper (its own peak RSS)."""
    script = getattr(options, stick.script_flag)
    command = [options.torch_python, memory.__file__, script]
    command += stick.arguments(settings, inner_lr)
    result = run_json(command, f"yardstick {stick.name}")
    result.update(yardstick=stick.name, peak_rss_mib=float(result["peak_rss_mib"]))
    return result


def matmul_run() -> dict[str, Any]:
    """The rate of a large float32 matmul here (``roof``), in its own process."""
    return run_json([sys.executable, "-m", BINARY, "--matmul"], "the matmul")


def fma_run(note: str | None) -> tuple[float | None, str | None]:
    """The FMA loop's rate here (``roof.measure_fma``) and, where it cannot
    run, None and the reason, printed once (``note``: the reason already
    printed): the shares are then of the listed peak and the matmul's."""
    if note is not None:
        return None, note
    try:
        return roof.measure_fma()["fma_gflops"], None
    except RuntimeError as error:
        note = f"the FMA loop is not timed ({error}); shares leave it out"
        print(note, flush=True)
        return None, note


def torch_import_rss_mib(torch_python: str) -> float:
    """The peak RSS of a process that imports torch and does nothing else."""
    command = [torch_python, memory.__file__, "--import", "torch"]
    return float(run_json(command, "`import torch`")["peak_rss_mib"])


def schedule(
    planned: list[dict[str, Any]], options: Options, settings: Settings
) -> list[tuple[str, Any]]:
    """One round: each algorithm at every XLA setting, then its yardsticks
    (with ``--torch_python``). A yardstick that cannot time ``settings`` is
    left out, with the reason printed (``Options.check`` has refused it
    already where its algorithm is named in ``--algorithms``)."""
    jobs: list[tuple[str, Any]] = []
    skipped: dict[str, None] = {}
    for entry in planned:
        algorithm = entry["algorithm"]
        jobs += [("tfmeta", (algorithm, xla)) for xla in options.xla]
        for stick in yardstick.YARDSTICKS.get(algorithm, ()):
            if not options.torch_python or ("yardstick", stick) in jobs:
                continue
            reason = stick.refusal(settings)
            if reason:
                skipped[f"{algorithm}'s yardstick skipped: {reason}"] = None
            else:
                jobs.append(("yardstick", stick))
    for line in skipped:
        print(line, flush=True)
    return jobs


def _print_settings(settings: Settings, options: Options) -> None:
    alpha = settings.inner_lr or "each algorithm's default"
    print(
        f"{settings.n_way}-way {settings.k_shot}-shot, {settings.q_query} query per "
        f"class, meta-batch {settings.meta_batch_size}, {settings.inner_steps} inner "
        f"step(s), alpha {alpha}, {settings.filters} filters, max-pool conv4; "
        f"{settings.steps} timed steps x {options.repeats} round(s), threads "
        f"{settings.threads or settings.cpu_threading}, malloc arenas "
        f"{settings.malloc_arenas}, task execution {settings.task_execution}, inner "
        f"loop {'unrolled' if settings.unroll_inner_loop else 'tf.while_loop'}, "
        f"recompute {settings.recompute_label()} (where an algorithm has it), fused "
        f"batch norm {'on' if settings.fused_batch_norm else 'off'}",
        flush=True,
    )
    print(memory.describe_peak_source(), flush=True)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5:
        print(
            f"warning: load average {load:.1f} on {cores} cores before starting; "
            "other processes slow the measurements (multi-threaded PyTorch most)",
            flush=True,
        )


def _torch_import(options: Options, jobs: list[tuple[str, Any]]) -> float | None:
    """The peak RSS of ``import torch`` alone (None: no yardstick)."""
    if not options.torch_python:
        print(
            "yardstick skipped: pass --torch_python=PATH, an interpreter with "
            "PyTorch; set one up with\n  python3 -m venv ../.venv-torch && "
            "../.venv-torch/bin/pip install torch==2.13.0 numpy",
            flush=True,
        )
        return None
    sticks = [key for kind, key in jobs if kind == "yardstick"]
    if not sticks:
        print("no yardstick computes these algorithms", flush=True)
        return None
    torch_import_rss = torch_import_rss_mib(options.torch_python)
    scripts = dict.fromkeys(getattr(options, s.script_flag) for s in sticks)
    print(
        f"yardstick: {', '.join(scripts)}; `import torch` alone peaks at "
        f"{torch_import_rss:.0f} MiB (its RSS growth = peak - that)",
        flush=True,
    )
    return torch_import_rss


def run_speed(settings: Settings, options: Options) -> dict[str, Any]:
    """Every planned algorithm at each XLA setting beside its yardstick."""
    settings.check()
    options.check(settings)
    _print_settings(settings, options)
    planned = plan(settings, options)
    jobs = schedule(planned, options, settings)
    torch_import_rss = _torch_import(options, jobs)
    alpha = {entry["algorithm"]: entry["inner_lr"] for entry in planned}
    results: dict[Any, list[dict[str, Any]]] = {job: [] for job in jobs}
    counted = any(entry["algorithm"] in flops.COUNTED for entry in planned)
    matmuls: list[float] = []
    fmas: list[float] = []
    fma_note = None
    for round_index in range(options.repeats):
        if counted:
            matmul = matmul_run()
            matmuls.append(matmul["matmul_gflops_median"])
            fma, fma_note = fma_run(fma_note)
            fmas += [fma] if fma else []
            print(
                f"round {round_index + 1}/{options.repeats} a {matmul['matmul_n']}"
                f"x{matmul['matmul_n']} float32 matmul: {matmuls[-1]:.1f} GFLOP/s"
                + (f"; the FMA loop: {fma:.1f} GFLOP/s" if fma else ""),
                flush=True,
            )
        for kind, key in jobs:
            if kind == "tfmeta":
                algorithm, xla = key
                job = dataclasses.replace(settings, jit_compile=xla == "on")
                result = tfmeta_run(algorithm, job)
            else:
                result = yardstick_run(key, settings, options, alpha[key.algorithm])
                result["rss_growth_mib"] = result["peak_rss_mib"] - torch_import_rss
            result["round"] = round_index + 1
            results[(kind, key)].append(result)
            print(
                f"round {round_index + 1}/{options.repeats} {report.describe(result)}",
                flush=True,
            )

    rows = report.speed_rows(jobs, results, settings)
    print()
    print(report.speed_table(rows))
    for line in report.loop_notes(rows):
        print(line)
    print()
    print(report.SPEED_NOTE)
    matmul_gflops = statistics.median(matmuls) if matmuls else None
    fma_gflops = max(fmas) if fmas else None
    print("\n".join(report.flop_notes(rows, settings, matmul_gflops, fma_gflops)))
    names = ("meta_batch_size", "n_way", "k_shot", "q_query", "inner_steps")
    names += ("inner_lr", "filters", "steps", "threads", "cpu_threading")
    summary = {
        "settings": {
            **{name: getattr(settings, name) for name in names},
            "malloc_arenas": settings.malloc_arenas,
            "repeats": options.repeats,
            "algorithms": [entry["algorithm"] for entry in planned],
            "xla": list(options.xla),
            "torch_python": options.torch_python,
            "yardstick": options.yardstick,
            "protonet_yardstick": options.protonet_yardstick,
        },
        "flops_per_step": {
            algorithm: flops.step_flops(algorithm, settings)
            for algorithm in flops.COUNTED
        },
        "torch_import_rss_mib": torch_import_rss,
        "matmul_gflops": matmul_gflops,
        "fma_gflops": fma_gflops,
        "cpu_peak_gflops": flops.cpu_peak_gflops(),
        "summary": rows,
        "measurements": [run for runs in results.values() for run in runs],
    }
    report.write_json(options.output_json, summary)
    return summary


def run_flops(settings: Settings, options: Options) -> dict[str, Any]:
    """For each planned algorithm ``flops`` counts, the FLOPs its step
    executes (``executed``) beside the count, from one child each with
    oneDNN's log on and the native kernels off (their work is not in the
    log; the same functions on TensorFlow's ops)."""
    settings.check()
    planned = [e for e in plan(settings, options) if e["algorithm"] in flops.COUNTED]
    if not planned:
        raise ValueError(
            f"--mode=flops reads the steps whose FLOPs are counted "
            f"({', '.join(flops.COUNTED)}); --algorithms has none of them"
        )
    figures = {}
    for entry in planned:
        algorithm = entry["algorithm"]
        command = [sys.executable, "-m", BINARY, f"--worker={algorithm}"]
        command += [*settings.to_args(), "--count_flops"]
        # The native kernels off: every convolution goes through oneDNN's log.
        environment = {"ONEDNN_VERBOSE": "1", "TFMETA_NATIVE_KERNELS": "0"}
        output = run_output(
            command, f"tfmeta {algorithm} with oneDNN's log", environment
        )
        result = last_json_line(output)
        for line in executed.report(result, output):
            print(line, flush=True)
        figures[algorithm] = {
            **result,
            "executed_flops": executed.step_flops(output) if result["onednn"] else None,
        }
    if options.output_json:
        pathlib.Path(options.output_json).write_text(json.dumps(figures, indent=1))
    return figures


def run_memory(settings: Settings, options: Options) -> dict[str, Any]:
    """Each planned algorithm that has a ``recompute`` setting at each
    ``--memory_inner_steps``, with and without it (XLA off), beside its
    yardstick at the same inner steps; one process each."""
    settings.check()
    options.check(settings)
    inner_steps = options.memory_steps()
    planned = [e for e in plan(settings, options) if "recompute" in e["settings"]]
    if not planned:
        raise ValueError(
            "--mode=memory times recomputation: none of --algorithms "
            f"{list(options.algorithms)} has a recompute setting"
        )
    names = ", ".join(entry["algorithm"] for entry in planned)
    print(
        f"memory: {names}, {settings.n_way}-way {settings.k_shot}-shot, "
        f"{settings.q_query} query per class, meta-batch {settings.meta_batch_size}, "
        f"{settings.filters} filters, XLA off, {settings.steps} timed steps; inner "
        f"steps {inner_steps}",
        flush=True,
    )
    print(memory.describe_peak_source(), flush=True)
    torch_python = options.torch_python
    torch_import_rss = torch_import_rss_mib(torch_python) if torch_python else None
    rows = []
    for steps in inner_steps:
        for entry in planned:
            for recompute in (False, True):
                job = dataclasses.replace(
                    settings,
                    inner_steps=steps,
                    jit_compile=False,
                    recompute=recompute,
                    recompute_steps=settings.recompute_steps if recompute else None,
                )
                result = tfmeta_run(entry["algorithm"], job, allocator_stats=True)
                result["implementation"] = f"tfmeta {entry['algorithm']}"
                rows.append(result)
                print(
                    f"{steps} inner steps, recompute={recompute}: "
                    f"{report.describe(result)}",
                    flush=True,
                )
            job = dataclasses.replace(settings, inner_steps=steps)
            for stick in yardstick.YARDSTICKS.get(entry["algorithm"], ()):
                if not torch_python or stick.refusal(job):
                    continue
                result = yardstick_run(stick, job, options, entry["inner_lr"])
                result["rss_growth_mib"] = result["peak_rss_mib"] - torch_import_rss
                result["implementation"] = f"PyTorch {result['torch']}"
                rows.append(result)
                print(f"{steps} inner steps: {report.describe(result)}", flush=True)
    print()
    print(report.memory_table(rows))
    summary = {"mode": "memory", "torch_import_rss_mib": torch_import_rss, "rows": rows}
    report.write_json(options.output_json, summary)
    return summary
