"""Speed and memory of one meta-training step, against PyTorch yardsticks.

  python -m experiments.benchmark --torch_python=../.venv-torch/bin/python

Every registered algorithm (``--algorithms``) at Omniglot 5-way 1-shot, 1
query per class, meta-batch 32, 1 inner step, with XLA off and on, beside the
PyTorch yardsticks (``experiments.bench.yardstick``): the MAML one
(``shared/bench/torch_maml_reference.py``, ``--yardstick``) at order 2 beside
``maml`` and order 1 beside ``fomaml``, and the Prototypical Networks one
(``shared/bench/torch_protonet_reference.py``, ``--protonet_yardstick``) in
eager mode and under torch.compile beside ``protonet``. Figures: median ms per
meta-step, compile seconds (the first call, which traces and compiles), peak
RSS and the growth of peak RSS after the model and learner are built, a
tfmeta row's ratio to the faster of its algorithm's yardsticks, and for
second-order MAML and Prototypical Networks rows the FLOPs of a step
(``experiments.bench.flops``, each implementation's own network), GFLOP/s
achieved and their share of this CPU's FP32 peak: the highest of the peak
from its listed clock and vector units, the rate a 2048x2048 float32 matmul
reaches in each round (``--matmul`` times it in a process of its own) and
the rate of fused multiply-adds on registers, one thread per core
(``experiments/bench/fma_loop.cc``, built with ``$CXX`` or g++), since a CPU
can run above its listed clock. Where a tfmeta worker also
timed the training binary's own loop (``loop_ms_per_step_median``:
experiments.train's Trainer on Omniglot episodes read from files, the same
settings), a "tfmeta training loop" row follows its compiled step's, with a
note of loop over compiled step (the target: within 10%). Prototypical
Networks as in the paper's Omniglot training (60-way 1-shot, 5 queries, one
episode per step)::

  python -m experiments.benchmark --torch_python=../.venv-torch/bin/python \\
      --algorithms=protonet --n_way=60 --meta_batch_size=1 --q_query=5 --xla=off

The ProtoNet yardstick takes one episode per step, so it times meta-batch 1
only. Named in ``--algorithms`` with another ``--meta_batch_size``,
``protonet`` with ``--torch_python`` is refused before anything runs: the
user asked for that comparison, and a run that would end without it should
not start. Among every algorithm by default (meta-batch 32), its yardstick
rows are left out with a printed reason and the others run, as an algorithm
that refuses a setting is skipped there.

Each algorithm is built through the registry, as the training binary builds
it (``experiments.bench.learners``): its declared defaults, the outer
optimizer of its own default config (Adam 1e-3 for MAML and FOMAML, annealed
SGD from epsilon = 1 for Reptile, Adam for LEO), and these flags for the keys
it has. Algorithms with an Omniglot config run on random images of that
shape and the yardstick's max-pool conv net; the others on random embedding
vectors of ``--embedding_dim`` and their own model (LEO: the reference
code's networks, 64 latents, 5 fine-tuning steps, the latent steps from
``--inner_steps``). A setting an algorithm does not have, or its learner does
not support (LEO: task execution loop only), is reported and left at its
own. Issue 6's second configuration is 20-way 1-shot, meta-batch 16, 5 inner
steps: ``--n_way=20 --meta_batch_size=16 --inner_steps=5``.

Every measurement runs in its own process (memory is per configuration, no
compile cache is shared): ``--worker=ALGORITHM`` runs one tfmeta
configuration and prints one JSON line. Configurations are interleaved over
``--repeats`` rounds (tfmeta MAML, yardstick order 2, tfmeta FOMAML,
yardstick order 1, ..., tfmeta protonet, its eager yardstick, its
torch.compile yardstick, then again), so a slow period of the machine does
not fall on one of them; figures are the median over rounds of each round's
median. Inputs are random tensors, as in the yardsticks: data loading is not
timed. Peak RSS is each process's own high-water mark (VmHWM; the yardsticks
and ``import torch`` run under ``experiments.bench.memory``'s wrapper), or
``ru_maxrss`` where /proc is absent, as the output says.

``--mode=memory`` measures the algorithms with a ``recompute`` setting
(second-order MAML) at 5, 10 and 25 inner steps (``--memory_inner_steps``),
storing every inner step's activations and recomputing them, beside the
yardstick at the same inner steps. Its tfmeta workers run with
``TF_CPU_ALLOCATOR_USE_BFC=true`` so that TensorFlow's CPU allocator reports
the peak bytes of live tensors during the steps ("peak tensor"): the memory
the meta-step itself needs, which recomputation lowers, apart from the
graph, its optimization and the runtime that RSS also holds.

``--mode=flops`` checks the count the shares rest on: each counted
algorithm's step runs once in a child with oneDNN's log on, and the FLOPs of
the convolutions it executed are printed beside ``experiments.bench.flops``'s
count (``experiments.bench.executed``)::

  python -m experiments.benchmark --mode=flops --algorithms=maml,protonet \\
      --n_way=20 --meta_batch_size=2 --inner_steps=5

The yardsticks' interpreter needs PyTorch, in its own virtual environment:
  python3 -m venv ../.venv-torch && ../.venv-torch/bin/pip install torch==2.13.0 numpy
"""

from __future__ import annotations

import json

from absl import app, flags

from . import (
    InputError,
    define_cpu_threading_flag,
    define_malloc_arenas_flag,
    run_binary,
)
from .bench import driver
from .bench.settings import MODES, XLA_SETTINGS, Options, Settings

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module registers
    no flags."""
    default = Settings()
    flags.DEFINE_string(
        "torch_python",
        None,
        "interpreter with PyTorch for the yardsticks (none: skip them)",
    )
    flags.DEFINE_string(
        "yardstick",
        driver.DEFAULT_YARDSTICK,
        "the PyTorch MAML yardstick script (order 2 beside maml, 1 beside fomaml)",
    )
    flags.DEFINE_string(
        "protonet_yardstick",
        driver.DEFAULT_PROTONET_YARDSTICK,
        "the PyTorch Prototypical Networks yardstick script (eager and "
        "torch.compile beside protonet; needs --meta_batch_size=1)",
    )
    from tfmeta.algorithms import ALGORITHMS

    flags.DEFINE_list(
        "algorithms",
        None,
        f"tfmeta algorithms to time, of {', '.join(ALGORITHMS)} (default: every one)",
    )
    flags.DEFINE_list("xla", list(XLA_SETTINGS), "XLA settings to time: off, on")
    flags.DEFINE_integer(
        "meta_batch_size",
        default.meta_batch_size,
        "tasks per meta-step (episodes per step for protonet; its yardstick takes 1)",
    )
    flags.DEFINE_integer("n_way", default.n_way, "classes per task (N)")
    flags.DEFINE_integer("k_shot", default.k_shot, "support examples per class (K)")
    flags.DEFINE_integer("q_query", default.q_query, "query examples per class")
    flags.DEFINE_integer("inner_steps", default.inner_steps, "inner steps")
    flags.DEFINE_float(
        "inner_lr",
        None,
        "alpha, the inner learning rate (default: each algorithm's own; 0.4, the "
        "yardstick's, for MAML, FOMAML and Reptile)",
    )
    flags.DEFINE_integer("filters", default.filters, "conv filters per block")
    flags.DEFINE_integer("steps", default.steps, "timed meta-steps per measurement")
    flags.DEFINE_integer("repeats", 2, "rounds over all configurations")
    flags.DEFINE_integer(
        "threads",
        default.threads,
        "CPU threads, intra- and inter-op alike (0: as --cpu_threading sets them)",
    )
    define_cpu_threading_flag()
    define_malloc_arenas_flag()
    flags.DEFINE_enum(
        "mode",
        "speed",
        list(MODES),
        "speed: every algorithm at each XLA setting beside its yardsticks; memory: "
        "the algorithms with a recompute setting at each --memory_inner_steps, "
        "with and without it; flops: the FLOPs a counted step executes (from "
        "oneDNN's log) beside the count",
    )
    flags.DEFINE_list(
        "memory_inner_steps", ["5", "10", "25"], "inner steps of the memory mode"
    )
    flags.DEFINE_integer(
        "embedding_dim",
        default.embedding_dim,
        "embedding size d of the algorithms run on embedding vectors (256: the "
        "conv4 features experiments.embed writes)",
    )
    flags.DEFINE_alias("leo_embedding_dim", "embedding_dim")
    flags.DEFINE_bool(
        "recompute",
        default.recompute,
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
        default.unroll_inner_loop,
        "unroll a differentiated inner loop (else a tf.while_loop)",
    )
    flags.DEFINE_bool(
        "fused_batch_norm",
        default.fused_batch_norm,
        "conv learners: batch norm through TensorFlow's fused kernel (else composed ops)",
    )
    flags.DEFINE_enum(
        "task_execution",
        default.task_execution,
        ["loop", "map_fn"],
        "how the tasks of a meta-batch run (where the learner supports it)",
    )
    flags.DEFINE_string("output_json", None, "also write every figure to this file")
    flags.DEFINE_string("worker", None, "internal: time one tfmeta algorithm")
    flags.DEFINE_bool(
        "plan", False, "internal: check each algorithm's configuration, one JSON line"
    )
    flags.DEFINE_bool("jit_compile", False, "internal: XLA setting of --worker")
    flags.DEFINE_bool(
        "count_flops",
        False,
        "internal: --worker runs one step between markers in oneDNN's log",
    )
    flags.DEFINE_bool(
        "matmul", False, "internal: time a large float32 matmul, one JSON line"
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    settings = Settings.from_flags(FLAGS)
    if FLAGS.matmul:
        from .bench import roof

        print(json.dumps(roof.measure_matmul()), flush=True)
        return
    if FLAGS.worker or FLAGS.plan:
        from .bench import learners, worker

        if FLAGS.plan:
            print(json.dumps(learners.plan(FLAGS.algorithms, settings)), flush=True)
            return
        try:
            configuration = learners.resolve(FLAGS.worker, settings)
        except ValueError as error:
            raise InputError(str(error)) from error
        if configuration.skip:
            raise InputError(f"{FLAGS.worker}: {configuration.skip}")
        if FLAGS.count_flops:
            from .bench import executed

            result = executed.run_counted_step(configuration, settings)
        else:
            result = worker.run_worker(configuration, settings)
        print(json.dumps(result), flush=True)
        return
    measure = {
        "memory": driver.run_memory,
        "flops": driver.run_flops,
        "speed": driver.run_speed,
    }[FLAGS.mode]
    try:
        measure(settings, Options.from_flags(FLAGS))
    except ValueError as error:  # a setting refused, before any measurement
        raise InputError(str(error)) from error


def run() -> None:
    """The console script ``tfmeta-benchmark``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
