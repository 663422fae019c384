"""Speed and memory of one meta-training step, against a PyTorch yardstick.

  python -m experiments.benchmark --torch_python=../.venv-torch/bin/python

For MAML (second order), FOMAML, Reptile and LEO at Omniglot 5-way 1-shot, 1 query
per class, on the max-pool conv net of the yardstick (meta-batch 32, 1 inner
step, alpha 0.4; Adam 1e-3 outer for MAML/FOMAML, SGD for Reptile), with XLA
off and on, and the PyTorch yardstick (``shared/bench/torch_maml_reference.py``)
at order 2 and order 1, it prints: median ms per meta-step, compile seconds
(the first call, which traces and compiles), peak RSS and the growth of peak
RSS after the model and learner are built.

Every measurement runs in its own process (memory is per configuration, no
compile cache is shared): ``--worker=ALGORITHM`` runs one tfmeta configuration
and prints one JSON line. Configurations are interleaved over ``--repeats``
rounds (tfmeta MAML, yardstick order 2, tfmeta FOMAML, yardstick order 1, ...,
then again), so a slow period of the machine does not fall on one of them;
figures are the median over rounds of each round's median. Inputs are random
tensors of the Omniglot shape, as in the yardstick: data loading is not timed.

LEO (``--algorithms`` includes leo) runs on random embedding vectors of
``--leo_embedding_dim`` with the reference code's networks (64 latents, 5
fine-tuning steps), the latent steps from ``--inner_steps``; it has no
yardstick. Issue 6's second configuration is 20-way 1-shot, meta-batch 16, 5
inner steps: ``--n_way=20 --meta_batch_size=16 --inner_steps=5``.

``--mode=memory`` measures second-order MAML at 5, 10 and 25 inner steps
(``--memory_inner_steps``), storing every inner step's activations and with
``--recompute``, beside the yardstick at the same inner steps. Its tfmeta
workers run with ``TF_CPU_ALLOCATOR_USE_BFC=true`` so that TensorFlow's CPU
allocator reports the peak bytes of live tensors during the steps ("peak
tensor"): the memory the meta-step itself needs, which recomputation lowers,
apart from the graph, its optimization and the runtime that RSS also holds.

The yardstick's interpreter needs PyTorch, in its own virtual environment:
  python3 -m venv ../.venv-torch && ../.venv-torch/bin/pip install torch==2.13.0 numpy
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from absl import app, flags

from . import (
    define_cpu_threading_flag,
    define_malloc_arenas_flag,
    recompute_steps_error,
    run_binary,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
# The timed workers run this module again: experiments.benchmark from a
# checkout's root, tfmeta.experiments.benchmark where it is installed.
WORKER_MODULE = __spec__.name
CHECKOUT = REPO if __package__ == "experiments" else None
ALGORITHMS = ("maml", "fomaml", "reptile", "leo")
MODES = ("speed", "memory")
XLA_SETTINGS = ("off", "on")
# The yardstick's order that each tfmeta algorithm is compared with.
YARDSTICK_ORDER = {"maml": 2, "fomaml": 1}
YARDSTICK_FILTERS = 64
IMAGE_SHAPE = (28, 28, 1)
OUTER_LR = 1e-3  # beta, Adam (MAML, FOMAML)
REPTILE_OUTER_LR = 1.0  # epsilon, SGD (Reptile)
# Forward passes' worth of work per example (backward ~2x forward):
# support: forward + backward of each inner step, and for second order another
# forward + backward through that step; query: forward + backward once.
SECOND_ORDER_SUPPORT_PASSES = 6
QUERY_PASSES = 3

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module (e.g. for
    ``forward_multiply_adds`` in a test) registers no flags."""
    flags.DEFINE_string(
        "torch_python", None, "interpreter with PyTorch for the yardstick (none: skip)"
    )
    flags.DEFINE_string(
        "yardstick",
        str(REPO.parent / "shared" / "bench" / "torch_maml_reference.py"),
        "the PyTorch yardstick script",
    )
    flags.DEFINE_list("algorithms", list(ALGORITHMS), "tfmeta algorithms to time")
    flags.DEFINE_list("xla", list(XLA_SETTINGS), "XLA settings to time: off, on")
    flags.DEFINE_integer("meta_batch_size", 32, "tasks per meta-step")
    flags.DEFINE_integer("n_way", 5, "classes per task (N)")
    flags.DEFINE_integer("k_shot", 1, "support examples per class (K)")
    flags.DEFINE_integer("q_query", 1, "query examples per class")
    flags.DEFINE_integer("inner_steps", 1, "inner steps")
    flags.DEFINE_float("inner_lr", 0.4, "alpha, the inner learning rate")
    flags.DEFINE_integer("filters", YARDSTICK_FILTERS, "conv filters per block")
    flags.DEFINE_integer("steps", 10, "timed meta-steps per measurement")
    flags.DEFINE_integer("repeats", 2, "rounds over all configurations")
    flags.DEFINE_integer(
        "threads",
        0,
        "CPU threads, intra- and inter-op alike (0: as --cpu_threading sets them)",
    )
    define_cpu_threading_flag()
    define_malloc_arenas_flag()
    flags.DEFINE_enum(
        "mode",
        "speed",
        list(MODES),
        "speed: every algorithm at each XLA setting beside the yardstick; memory: "
        "second-order MAML at each --memory_inner_steps with and without --recompute",
    )
    flags.DEFINE_list(
        "memory_inner_steps", ["5", "10", "25"], "inner steps of the memory mode"
    )
    flags.DEFINE_integer(
        "leo_embedding_dim",
        256,
        "LEO: embedding size d (256: the conv4 features experiments.embed writes)",
    )
    flags.DEFINE_bool(
        "recompute",
        False,
        "second-order MAML recomputes each inner step's activations in the "
        "backward pass (speed mode; the memory mode runs both)",
    )
    flags.DEFINE_integer(
        "recompute_steps",
        None,
        "with --recompute: recompute only the first this many inner steps and "
        "keep the later steps' activations (default: all but the last)",
    )
    flags.DEFINE_bool(
        "unroll_inner_loop",
        True,
        "MAML: unroll the differentiated inner loop (else a tf.while_loop)",
    )
    flags.DEFINE_bool(
        "fused_batch_norm",
        True,
        "conv learners: batch norm through TensorFlow's fused kernel (else composed ops)",
    )
    flags.DEFINE_enum(
        "task_execution",
        "loop",
        ["loop", "map_fn"],
        "how MAML, FOMAML and Reptile run the tasks of a meta-batch (LEO: loop)",
    )
    flags.DEFINE_string("output_json", None, "also write every figure to this file")
    flags.DEFINE_string("worker", None, "internal: time one tfmeta algorithm")
    flags.DEFINE_bool("jit_compile", False, "internal: XLA setting of --worker")


# ------------------------------------------------------------------ FLOPs
def forward_multiply_adds(
    n_way: int,
    filters: int = 64,
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
    filters: int = 64,
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


# ----------------------------------------------------------------- worker
def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def random_episode(
    meta_batch_size: int,
    n_way: int,
    k_shot: int,
    q_query: int,
    example_shape: tuple[int, ...] = IMAGE_SHAPE,
) -> tuple:
    """A seeded random episode (timing does not depend on the values)."""
    import numpy as np
    import tensorflow as tf

    b, n, k, q = meta_batch_size, n_way, k_shot, q_query
    rng = np.random.default_rng(0)
    return (
        tf.constant(rng.standard_normal((b, n * k, *example_shape)), tf.float32),
        tf.constant(np.tile(np.repeat(np.arange(n), k), (b, 1)), tf.int32),
        tf.constant(rng.standard_normal((b, n * q, *example_shape)), tf.float32),
        tf.constant(np.tile(np.repeat(np.arange(n), q), (b, 1)), tf.int32),
    )


def conv_network(n_way: int, filters: int = YARDSTICK_FILTERS, fused_batch_norm=True):
    """The yardstick's network: max-pool conv4, seeded."""
    from tfmeta.models import conv4

    return conv4(
        n_way,
        IMAGE_SHAPE,
        filters=filters,
        pooling="max",
        seed=0,
        fused_batch_norm=fused_batch_norm,
    )


def run_worker(algorithm: str, jit_compile: bool) -> dict[str, Any]:
    """Times one tfmeta configuration in this process (flags give the rest)."""
    import keras
    import tensorflow as tf

    from tfmeta import runtime
    from tfmeta.algorithms import FOMAML, LEO, MAML, Reptile
    from tfmeta.models import LEOModel

    settings = runtime.configure(
        cpu_threading=None if FLAGS.threads else FLAGS.cpu_threading,
        malloc_arenas=FLAGS.malloc_arenas,
        jit_compile=jit_compile,
    )
    malloc_arenas = settings.malloc_arenas  # None: glibc's default (or not glibc)
    cpu_threading = runtime.resolve_cpu_threading(FLAGS.cpu_threading, jit_compile)
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    b, n, k, q = FLAGS.meta_batch_size, FLAGS.n_way, FLAGS.k_shot, FLAGS.q_query
    example = (FLAGS.leo_embedding_dim,) if algorithm == "leo" else IMAGE_SHAPE
    episode = random_episode(b, n, k, q, example)
    common = {
        "inner_lr": FLAGS.inner_lr,
        "inner_steps": FLAGS.inner_steps,
        "jit_compile": jit_compile,
        "task_execution": FLAGS.task_execution,
    }
    if algorithm == "leo":
        # The reference code's networks and settings (64 latents, 5 fine-tuning
        # steps, dropout, sampling), the latent steps from --inner_steps.
        model = LEOModel(FLAGS.leo_embedding_dim, num_latents=64, seed=0)
        del common["inner_lr"], common["task_execution"]  # LEO runs its loop
        learner = LEO(model, keras.optimizers.Adam(OUTER_LR), n_way=n, **common)
    elif algorithm == "reptile":
        model = conv_network(n, FLAGS.filters, FLAGS.fused_batch_norm)
        outer = keras.optimizers.SGD(REPTILE_OUTER_LR)
        learner = Reptile(model, outer, inner_batch_size=None, **common)
    else:
        model = conv_network(n, FLAGS.filters, FLAGS.fused_batch_norm)
        extra = (
            {"recompute": FLAGS.recompute, "recompute_steps": FLAGS.recompute_steps}
            if algorithm == "maml"
            else {}
        )
        extra["unroll_inner_loop"] = FLAGS.unroll_inner_loop
        learner_class = MAML if algorithm == "maml" else FOMAML
        learner = learner_class(
            model, keras.optimizers.Adam(OUTER_LR), **common, **extra
        )
    # Build (or load) the native batch-norm kernel now: its one-time compile
    # is not the step's, and its library is not the step's memory.
    from tfmeta.models import kernels

    native_kernels = kernels.batch_norm_grad_grad_op() is not None
    built_rss = _peak_rss_mib()
    # With TF_CPU_ALLOCATOR_USE_BFC=true (the memory mode sets it), the CPU
    # allocator counts the bytes of live tensors: the step's own memory, apart
    # from the graph, its optimization and the runtime that RSS also holds.
    allocator_stats = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC") == "true"
    if allocator_stats:
        tf.config.experimental.reset_memory_stats("CPU:0")

    start = time.perf_counter()
    learner.meta_train_step(episode)["loss"].numpy()  # traces and compiles
    first_call_s = time.perf_counter() - start
    times = []
    for _ in range(FLAGS.steps):
        start = time.perf_counter()
        learner.meta_train_step(episode)["loss"].numpy()
        times.append(time.perf_counter() - start)
    peak = _peak_rss_mib()
    tensor_peak = (
        tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
        if allocator_stats
        else None
    )
    return {
        "impl": "tfmeta",
        "algorithm": algorithm,
        "xla": "on" if jit_compile else "off",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn": runtime.onednn_enabled(),
        "threads": FLAGS.threads or "default",
        "cpu_threading": "-" if FLAGS.threads else cpu_threading,
        "malloc_arenas": malloc_arenas or "glibc",
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "meta_batch_size": b,
        "n_way": n,
        "k_shot": k,
        "q_query": q,
        "inner_steps": FLAGS.inner_steps,
        "filters": FLAGS.filters,
        "recompute": bool(FLAGS.recompute and algorithm == "maml"),
        "recompute_steps": FLAGS.recompute_steps if algorithm == "maml" else None,
        "task_execution": "loop" if algorithm == "leo" else FLAGS.task_execution,
        "unroll_inner_loop": FLAGS.unroll_inner_loop,
        "fused_batch_norm": FLAGS.fused_batch_norm,
        "native_kernels": native_kernels,
        "steps": FLAGS.steps,
        "ms_per_step_median": round(1000 * statistics.median(times), 2),
        # The first call traces, compiles and runs one step: compile time is
        # that less a step (at 20-way a step alone takes seconds).
        "first_call_s": round(first_call_s, 3),
        "compile_s": round(max(0.0, first_call_s - statistics.median(times)), 3),
        "peak_rss_mib": round(peak, 1),
        "built_rss_mib": round(built_rss, 1),
        "rss_growth_mib": round(peak - built_rss, 1),
        "tensor_peak_mib": None if tensor_peak is None else round(tensor_peak, 1),
    }


# ----------------------------------------------------------------- driver
def _last_json_line(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("no JSON line in the output")
    return json.loads(lines[-1])


def _run(
    command: list[str], what: str, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(extra_env or {}))
    done = subprocess.run(
        command, check=False, cwd=CHECKOUT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-30:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return _last_json_line(done.stdout)


def _shared_args() -> list[str]:
    names = ["meta_batch_size", "n_way", "k_shot", "q_query", "inner_steps"]
    names += ["inner_lr", "filters", "steps", "threads", "cpu_threading"]
    names += ["malloc_arenas"]
    names += ["task_execution", "unroll_inner_loop", "fused_batch_norm"]
    return [f"--{name}={getattr(FLAGS, name)}" for name in names]


def _tfmeta(
    algorithm: str,
    xla: str,
    inner_steps: int | None = None,
    recompute: bool = False,
    allocator_stats: bool = False,
) -> dict[str, Any]:
    command = [sys.executable, "-m", WORKER_MODULE, f"--worker={algorithm}"]
    command += [f"--jit_compile={xla == 'on'}", *_shared_args()]
    command += [f"--leo_embedding_dim={FLAGS.leo_embedding_dim}"]
    if inner_steps is not None:
        command.append(f"--inner_steps={inner_steps}")  # the last flag wins
    if recompute:
        command.append("--recompute")
        if FLAGS.recompute_steps is not None:
            command.append(f"--recompute_steps={FLAGS.recompute_steps}")
    extra_env = {"TF_CPU_ALLOCATOR_USE_BFC": "true"} if allocator_stats else None
    return _run(command, f"tfmeta {algorithm} xla={xla}", extra_env)


def _yardstick(order: int, inner_steps: int | None = None) -> dict[str, Any]:
    command = [FLAGS.torch_python, FLAGS.yardstick, f"--order={order}"]
    command += [f"--meta_batch={FLAGS.meta_batch_size}", f"--steps={FLAGS.steps}"]
    for name in ("n_way", "k_shot", "q_query", "inner_lr", "threads"):
        command.append(f"--{name}={getattr(FLAGS, name)}")
    command.append(f"--inner_steps={inner_steps or FLAGS.inner_steps}")
    result = _run(command, f"yardstick order {order}")
    result["peak_rss_mib"] = float(result["peak_rss_mib"])
    return result


def _torch_import_rss_mib() -> float:
    code = "import torch, resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run(
        [FLAGS.torch_python, "-c", code], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1]) / 1024


def _check_flags() -> None:
    """Every mistake a user can make fails here, before any long work."""
    for name in ("meta_batch_size", "n_way", "k_shot", "q_query", "filters"):
        if getattr(FLAGS, name) < 1:
            raise app.UsageError(f"--{name} must be >= 1, got {getattr(FLAGS, name)}")
    for name in ("inner_steps", "threads"):
        if getattr(FLAGS, name) < 0:
            raise app.UsageError(f"--{name} must be >= 0, got {getattr(FLAGS, name)}")
    error = recompute_steps_error(
        FLAGS.recompute_steps, FLAGS.recompute, FLAGS.unroll_inner_loop
    )
    if error:
        raise app.UsageError(error)
    if FLAGS.steps < 1 or FLAGS.repeats < 1:
        raise app.UsageError(
            f"--steps and --repeats must be >= 1, got {FLAGS.steps}, {FLAGS.repeats}"
        )
    unknown = set(FLAGS.algorithms) - set(ALGORITHMS)
    if unknown or not FLAGS.algorithms:
        raise app.UsageError(
            f"--algorithms must be among {ALGORITHMS}, got {FLAGS.algorithms}"
        )
    if set(FLAGS.xla) - set(XLA_SETTINGS) or not FLAGS.xla:
        raise app.UsageError(f"--xla must be among {XLA_SETTINGS}, got {FLAGS.xla}")
    if FLAGS.torch_python:
        if not os.access(FLAGS.torch_python, os.X_OK):
            raise app.UsageError(
                f"--torch_python={FLAGS.torch_python} is not an executable"
            )
        if not os.path.isfile(FLAGS.yardstick):
            raise app.UsageError(f"--yardstick={FLAGS.yardstick} does not exist")
        if FLAGS.filters != YARDSTICK_FILTERS:
            raise app.UsageError(
                f"the yardstick's network has {YARDSTICK_FILTERS} filters; got "
                f"--filters={FLAGS.filters} (drop --torch_python to time other widths)"
            )


def _describe(result: dict[str, Any]) -> str:
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
    else:
        name = f"yardstick order {result['order']} (torch {result['torch']})"
        extra = f", peak RSS {result['peak_rss_mib']:.0f} MiB"
    return f"{name}: {result['ms_per_step_median']:.1f} ms/step{extra}"


def _summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of time and compile time; the largest peak RSS."""
    summary = dict(runs[0])
    summary["rounds"] = len(runs)
    for key in ("ms_per_step_median", "compile_s"):
        if key in summary:
            summary[key] = statistics.median(run[key] for run in runs)
    for key in ("peak_rss_mib", "rss_growth_mib"):
        if key in summary:
            summary[key] = max(run[key] for run in runs)
    return summary


def _table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| implementation | algorithm | XLA | median ms/step | compile s "
        "| peak RSS MiB | RSS growth MiB | ratio to yardstick |"
    )
    lines = [header, "|" + " --- |" * 8]
    for row in rows:
        cells = [
            row["implementation"],
            row["algorithm"],
            row["xla"],
            f"{row['ms_per_step_median']:.1f}",
            "-" if row.get("compile_s") is None else f"{row['compile_s']:.1f}",
            f"{row['peak_rss_mib']:.0f}",
            f"{row['rss_growth_mib']:.0f}",
            "-" if row.get("ratio") is None else f"{row['ratio']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _schedule() -> list[tuple[str, Any]]:
    """One round: each algorithm at every XLA setting, then its yardstick."""
    jobs: list[tuple[str, Any]] = []
    for algorithm in FLAGS.algorithms:
        jobs += [("tfmeta", (algorithm, xla)) for xla in FLAGS.xla]
        if FLAGS.torch_python and algorithm in YARDSTICK_ORDER:
            jobs.append(("yardstick", YARDSTICK_ORDER[algorithm]))
    return jobs


def _recompute_label() -> str:
    if not FLAGS.recompute:
        return "off"
    if FLAGS.recompute_steps is None:
        return "on"
    return f"on, first {FLAGS.recompute_steps} step(s)"


def run_benchmark() -> dict[str, Any]:
    _check_flags()
    print(
        f"{FLAGS.n_way}-way {FLAGS.k_shot}-shot, {FLAGS.q_query} query per class, "
        f"meta-batch {FLAGS.meta_batch_size}, {FLAGS.inner_steps} inner step(s), "
        f"alpha {FLAGS.inner_lr}, {FLAGS.filters} filters, max-pool conv4; "
        f"{FLAGS.steps} timed steps x {FLAGS.repeats} round(s), "
        f"threads {FLAGS.threads or FLAGS.cpu_threading}, malloc arenas "
        f"{FLAGS.malloc_arenas}, task execution {FLAGS.task_execution}, "
        f"inner loop {'unrolled' if FLAGS.unroll_inner_loop else 'tf.while_loop'}, "
        f"recompute {_recompute_label()} (MAML), fused batch norm "
        f"{'on' if FLAGS.fused_batch_norm else 'off'}",
        flush=True,
    )
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5:
        print(
            f"warning: load average {load:.1f} on {cores} cores before starting; "
            "other processes slow the measurements (multi-threaded PyTorch most)",
            flush=True,
        )
    torch_import_rss = None
    if FLAGS.torch_python:
        torch_import_rss = _torch_import_rss_mib()
        print(
            f"yardstick: {FLAGS.yardstick}; `import torch` alone peaks at "
            f"{torch_import_rss:.0f} MiB (its RSS growth = peak - that)",
            flush=True,
        )
    else:
        print(
            "yardstick skipped: pass --torch_python=PATH, an interpreter with "
            "PyTorch; set one up with\n  python3 -m venv ../.venv-torch && "
            "../.venv-torch/bin/pip install torch==2.13.0 numpy",
            flush=True,
        )
    jobs = _schedule()
    results: dict[Any, list[dict[str, Any]]] = {job: [] for job in jobs}
    for round_index in range(FLAGS.repeats):
        for kind, key in jobs:
            if kind == "tfmeta":
                result = _tfmeta(*key, recompute=FLAGS.recompute and key[0] == "maml")
            else:
                result = _yardstick(key)
                result["rss_growth_mib"] = result["peak_rss_mib"] - torch_import_rss
            result["round"] = round_index + 1
            results[(kind, key)].append(result)
            print(
                f"round {round_index + 1}/{FLAGS.repeats} {_describe(result)}",
                flush=True,
            )

    flops = maml_step_flops(
        FLAGS.meta_batch_size,
        FLAGS.n_way,
        FLAGS.k_shot,
        FLAGS.q_query,
        FLAGS.inner_steps,
        FLAGS.filters,
    )
    rows = []
    for kind, key in jobs:
        summary = _summarize(results[(kind, key)])
        if kind == "tfmeta":
            algorithm = key[0]
            row = dict(summary, implementation="tfmeta", algorithm=algorithm)
            order = YARDSTICK_ORDER.get(algorithm)
            yardstick = results.get(("yardstick", order))
            if yardstick:
                reference = _summarize(yardstick)["ms_per_step_median"]
                row["ratio"] = summary["ms_per_step_median"] / reference
        else:
            name = {2: "maml", 1: "fomaml"}[key]
            row = dict(
                summary,
                implementation=f"PyTorch {summary['torch']}",
                algorithm=f"{name} (order {key})",
                xla="-",
                compile_s=None,
            )
        if key in (("maml", "off"), ("maml", "on"), 2):
            row["gflops_per_s"] = flops / (row["ms_per_step_median"] / 1000) / 1e9
        rows.append(row)

    print()
    print(_table(rows))
    print()
    print(
        "ms/step and compile s: median over rounds of each round's median; compile "
        "s is the first call (trace, graph optimization, one step) less a step; "
        "peak RSS and growth: the largest over rounds. tfmeta's growth is over the "
        "peak RSS once model and learner are built (importing TensorFlow alone "
        "takes ~540 MiB); the yardstick's is over `import torch` alone."
    )
    print(
        f"second-order MAML: ~{flops / 1e9:.2f} GFLOP per meta-step, counting conv "
        f"and dense multiply-adds of the forward pass (2 FLOPs each, "
        f"{forward_multiply_adds(FLAGS.n_way, FLAGS.filters):,} per example), with "
        f"backward ~2x forward and second order adding another forward + backward "
        f"through the inner step: {SECOND_ORDER_SUPPORT_PASSES}x the support "
        f"forward per inner step, {QUERY_PASSES}x the query forward."
    )
    peak = cpu_peak_gflops()
    if peak:
        print(
            f"CPU FP32 peak ~{peak:.0f} GFLOP/s ({len(os.sched_getaffinity(0))} "
            "cores x clock x FLOPs per cycle of its vector units)"
        )
    for row in rows:
        if "gflops_per_s" in row:
            share = f", {100 * row['gflops_per_s'] / peak:.0f}% of peak" if peak else ""
            row["fraction_of_peak"] = row["gflops_per_s"] / peak if peak else None
            print(
                f"  {row['implementation']} {row['algorithm']}"
                f"{'' if row['xla'] == '-' else ' xla=' + row['xla']}: "
                f"{row['gflops_per_s']:.2f} GFLOP/s achieved{share}"
            )
    report = {
        "settings": {
            name: getattr(FLAGS, name)
            for name in (
                "meta_batch_size",
                "n_way",
                "k_shot",
                "q_query",
                "inner_steps",
                "inner_lr",
                "filters",
                "steps",
                "repeats",
                "threads",
                "cpu_threading",
                "malloc_arenas",
                "algorithms",
                "xla",
                "torch_python",
                "yardstick",
            )
        },
        "maml_flops_per_step": flops,
        "torch_import_rss_mib": torch_import_rss,
        "summary": rows,
        "measurements": [run for runs in results.values() for run in runs],
    }
    if FLAGS.output_json:
        pathlib.Path(FLAGS.output_json).write_text(json.dumps(report, indent=2))
        print(f"wrote {FLAGS.output_json}")
    return report


def run_memory() -> dict[str, Any]:
    """Second-order MAML at each ``--memory_inner_steps``, with and without
    ``--recompute`` (XLA off), beside the yardstick at order 2; one process each."""
    _check_flags()
    try:
        inner_steps = [int(s) for s in FLAGS.memory_inner_steps]
    except ValueError as error:
        raise app.UsageError(
            f"--memory_inner_steps must be integers, got {FLAGS.memory_inner_steps}"
        ) from error
    if not inner_steps or min(inner_steps) < 1:
        raise app.UsageError(
            f"--memory_inner_steps must be >= 1, got {FLAGS.memory_inner_steps}"
        )
    print(
        f"memory: second-order MAML, {FLAGS.n_way}-way {FLAGS.k_shot}-shot, "
        f"{FLAGS.q_query} query per class, meta-batch {FLAGS.meta_batch_size}, "
        f"{FLAGS.filters} filters, XLA off, {FLAGS.steps} timed steps; inner steps "
        f"{inner_steps}",
        flush=True,
    )
    torch_import_rss = _torch_import_rss_mib() if FLAGS.torch_python else None
    rows = []
    for steps in inner_steps:
        for recompute in (False, True):
            result = _tfmeta("maml", "off", steps, recompute, allocator_stats=True)
            result["implementation"] = "tfmeta"
            rows.append(result)
            print(
                f"{steps} inner steps, recompute={recompute}: {_describe(result)}",
                flush=True,
            )
        if FLAGS.torch_python:
            result = _yardstick(2, steps)
            result["rss_growth_mib"] = result["peak_rss_mib"] - torch_import_rss
            result["implementation"] = f"PyTorch {result['torch']}"
            rows.append(result)
            print(f"{steps} inner steps: {_describe(result)}", flush=True)
    lines = [
        (
            "| implementation | inner steps | recompute | ms/step | compile s "
            "| peak RSS MiB | RSS growth MiB | peak tensor MiB |"
        ),
        "|" + " --- |" * 8,
    ]
    for row in rows:
        compile_s = row.get("compile_s")
        tensor_peak = row.get("tensor_peak_mib")
        lines.append(
            f"| {row['implementation']} | {row['inner_steps']} | "
            f"{'yes' if row.get('recompute') else 'no'} | {row['ms_per_step_median']:.1f} | "
            f"{'-' if compile_s is None else f'{compile_s:.1f}'} | "
            f"{row['peak_rss_mib']:.0f} | {row['rss_growth_mib']:.0f} | "
            f"{'-' if tensor_peak is None else f'{tensor_peak:.0f}'} |"
        )
    print()
    print("\n".join(lines))
    report = {"mode": "memory", "torch_import_rss_mib": torch_import_rss, "rows": rows}
    if FLAGS.output_json:
        pathlib.Path(FLAGS.output_json).write_text(json.dumps(report, indent=2))
        print(f"wrote {FLAGS.output_json}")
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.worker:
        if FLAGS.worker not in ALGORITHMS:
            raise app.UsageError(
                f"--worker must be one of {ALGORITHMS}, got {FLAGS.worker!r}"
            )
        print(json.dumps(run_worker(FLAGS.worker, FLAGS.jit_compile)), flush=True)
        return
    if FLAGS.mode == "memory":
        run_memory()
    else:
        run_benchmark()


def run() -> None:
    """The console script ``tfmeta-benchmark``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
