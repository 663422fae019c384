"""Times one tfmeta configuration in this process: the driver starts one
process per measurement (``--worker=ALGORITHM``), which prints one JSON line.

Figures: the first call (trace, compile, one step) and the median of the
timed steps, peak RSS and its growth over the peak once model and learner
are built, and with ``TF_CPU_ALLOCATOR_USE_BFC=true`` the CPU allocator's
peak of live tensors during the steps.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
from typing import Any

from . import learners
from .memory import peak_rss_mib
from .settings import Settings


def configure_runtime(settings: Settings) -> tuple[str | None, str]:
    """The process's threads, malloc arenas and XLA as ``settings`` ask,
    before TensorFlow's first op: the arena cap (None: glibc's default) and
    the CPU threading in effect ("tasks" or "ops")."""
    import tensorflow as tf

    from tfmeta import runtime

    runtime_settings = runtime.configure(
        cpu_threading=None if settings.threads else settings.cpu_threading,
        malloc_arenas=settings.malloc_arenas,
        jit_compile=settings.jit_compile,
        tasks_per_step=settings.meta_batch_size,
    )
    cpu_threading = runtime.resolve_cpu_threading(
        settings.cpu_threading, settings.jit_compile, settings.meta_batch_size
    )
    if settings.threads:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
        tf.config.threading.set_inter_op_parallelism_threads(settings.threads)
    return runtime_settings.malloc_arenas, cpu_threading


def run_worker(
    configuration: learners.Configuration, settings: Settings
) -> dict[str, Any]:
    """Times one resolved configuration (``learners.resolve``)."""
    import keras
    import tensorflow as tf

    from tfmeta import runtime

    malloc_arenas, cpu_threading = configure_runtime(settings)
    config = configuration.config
    episode = learners.episode(configuration)
    learner = learners.build_learner(configuration, settings)
    # Build (or load) the native kernels now: their one-time compile
    # is not the step's, and their library is not the step's memory.
    from tfmeta.models import kernels

    native_kernels = kernels.library() is not None
    built_rss = peak_rss_mib()
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
    for _ in range(settings.steps):
        start = time.perf_counter()
        learner.meta_train_step(episode)["loss"].numpy()
        times.append(time.perf_counter() - start)
    loop = time_training_loop(configuration, learner, settings.steps)
    peak = peak_rss_mib()
    tensor_peak = (
        tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
        if allocator_stats
        else None
    )
    return {
        "impl": "tfmeta",
        "algorithm": configuration.algorithm,
        "xla": "on" if settings.jit_compile else "off",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "onednn": runtime.onednn_enabled(),
        "threads": settings.threads or "default",
        "cpu_threading": "-" if settings.threads else cpu_threading,
        "malloc_arenas": malloc_arenas or "glibc",
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "meta_batch_size": config["meta_batch_size"],
        "n_way": config["n_way"],
        "k_shot": config["k_shot"],
        "q_query": config["q_query"],
        "inner_steps": config["inner_steps"],
        "inner_lr": config["inner_lr"],
        "filters": config["filters"],
        "model": learner.model.name,
        "input_shape": list(configuration.input_shape),
        "outer_optimizer": config["outer_optimizer"],
        "outer_lr": config["outer_lr"],
        "recompute": bool(config["recompute"]),
        "recompute_steps": config["recompute_steps"],
        "task_execution": learner.task_execution,
        "unroll_inner_loop": bool(config["unroll_inner_loop"]),
        "fused_batch_norm": settings.fused_batch_norm,
        "native_kernels": native_kernels,
        "notes": configuration.notes,
        "steps": settings.steps,
        "ms_per_step_median": round(1000 * statistics.median(times), 2),
        # The first call traces, compiles and runs one step: compile time is
        # that less a step (at 20-way a step alone takes seconds).
        "first_call_s": round(first_call_s, 3),
        "compile_s": round(max(0.0, first_call_s - statistics.median(times)), 3),
        "peak_rss_mib": round(peak, 1),
        "built_rss_mib": round(built_rss, 1),
        "rss_growth_mib": round(peak - built_rss, 1),
        "tensor_peak_mib": None if tensor_peak is None else round(tensor_peak, 1),
        **loop,
    }


def time_training_loop(
    configuration: learners.Configuration, learner, steps: int
) -> dict[str, Any]:
    """The training binary's own loop (``tfmeta.training.Trainer``, as
    ``experiments.train`` runs it) over the same learner, now on Omniglot
    episodes from the files (``tfmeta.task_sets``, the config's stream:
    rotations, prefetching): ``loop_ms_per_step_median``, the median time
    from one finished meta-step to the next over ``steps`` steps after two
    more, which includes drawing the episode, the step, its host
    synchronization and the per-step summaries. ``loop_skip`` says why there
    is none (an algorithm on embedding vectors, no Omniglot files)."""
    import tempfile

    import tfmeta
    from tfmeta.training import Trainer

    config = configuration.config
    if config["dataset"] != "omniglot":
        return {"loop_skip": f"its data are {config['dataset']}, not Omniglot files"}
    try:
        loop_config = dict(config, val_tasks=0)
        if "train_n_way" in config:
            # Only the training stream is drawn: at the benchmark's way (60
            # for Prototypical Networks' episodes), with the held-out tasks'
            # way small enough for the held-out characters.
            loop_config.update(train_n_way=config["n_way"], n_way=2)
        data = tfmeta.task_sets(loop_config)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        return {"loop_skip": f"no Omniglot episodes: {error}"}
    finished: list[float] = []

    def events(event: str, step: int) -> None:
        if event == "trained":
            finished.append(time.perf_counter())

    warm_up = 2
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(
            learner,
            workdir,
            data.train,
            log_every=10**9,
            eval_every=10**9,
            checkpoint_every=10**9,
            print_fn=lambda line: None,
            events=events,
        )
        trainer.train(trainer.step + steps + warm_up + 1)
    intervals = [b - a for a, b in itertools.pairwise(finished)][warm_up:]
    return {
        "loop_steps": len(intervals),
        "loop_ms_per_step_median": round(1000 * statistics.median(intervals), 2),
        "loop_data": data.split,
    }
