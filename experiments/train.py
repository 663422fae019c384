"""Meta-trains a learner, then evaluates it on the fixed meta-test tasks.

  python -m experiments.train --algorithm=maml --dataset=omniglot \
      --n_way=5 --k_shot=1 --num_steps=2000 --workdir=/tmp/tfmeta/maml

Rerunning the same command resumes from the last checkpoint. Results (mean
and 95% interval over the meta-test tasks) are printed and written to
``<workdir>/results.json``; the best checkpoint by meta-validation is used.

``--strategy=mirrored`` splits every meta-batch across this host's GPUs (or,
with ``--cpu_replicas=N``, N logical CPU devices); ``--strategy=multi_worker``
across the workers named in ``TF_CONFIG`` (run the same command on each).
Checkpoints are the same whatever the strategy: a run resumes on any.
"""

from __future__ import annotations

import time

from absl import app, flags, logging

from tfmeta.algorithms import get_algorithm

from . import common, configure_runtime, run_binary
from .configs import BASE, FIXED_KEYS
from .flags import FLAGS, resolved_config

flags.DEFINE_bool("evaluate", True, "evaluate on the meta-test tasks after training")
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "multi_worker"],
    "default: one device; mirrored: the meta-batch split across this host's GPUs "
    "(or --cpu_replicas logical CPUs); multi_worker: across the hosts of TF_CONFIG",
)
flags.DEFINE_integer(
    "cpu_replicas",
    0,
    "with --strategy=mirrored and no GPU: split the CPU into this many logical devices",
)


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError(
            "--workdir is required (the run's folder; rerun with the same one to resume)"
        )
    try:
        config = resolved_config()
        common.check_config(config)
    except ValueError as error:  # a bad setting: its message, no traceback
        raise app.UsageError(str(error)) from error
    from tfmeta.training.distribute import make_strategy, worker_workdir

    # Before any other TensorFlow work: malloc arenas, thread pools and
    # logical devices are fixed once it starts.
    configure_runtime(FLAGS.cpu_threading, FLAGS.malloc_arenas, config["jit_compile"])
    try:
        strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
    except ValueError as error:
        raise app.UsageError(str(error)) from error
    replicas = strategy.num_replicas_in_sync
    if config["meta_batch_size"] % replicas:
        raise app.UsageError(
            f"--meta_batch_size={config['meta_batch_size']} does not split over the "
            f"{replicas} replicas of --strategy={FLAGS.strategy}: use a multiple of {replicas}"
        )
    try:  # what the learner declares it supports, e.g. one device only
        get_algorithm(config["algorithm"]).learner.check_capabilities(
            config["task_weighting"], config["task_execution"], replicas=replicas
        )
    except ValueError as error:
        raise app.UsageError(f"--strategy={FLAGS.strategy}: {error}") from error
    workdir = worker_workdir(FLAGS.workdir, strategy)
    from tfmeta.training import Trainer, prepare_workdir

    from .evaluate import evaluate_workdir

    # Everything that can fail on user input fails here, before training
    # starts: missing data, too few classes or images, a changed config on resume.
    try:
        data = common.build_data(config)
        config["data_source"] = data.split
        resuming = prepare_workdir(workdir, config, FIXED_KEYS, defaults=BASE)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise app.UsageError(str(error)) from error
    with strategy.scope():
        model = common.build_model(config, data.input_shape)
        learner = common.build_learner(config, model)
    if replicas > 1:
        print(
            f"{FLAGS.strategy} strategy: {replicas} replicas, "
            f"{config['meta_batch_size'] // replicas} tasks each per meta-step"
        )
    print(
        f"{'resuming' if resuming else 'starting'} {config['algorithm']} on {data.description}"
    )
    print(
        f"{config['n_way']}-way {config['train_k_shot'] or config['k_shot']}-shot training, meta-batch "
        f"{config['meta_batch_size']}, {config['inner_steps']} inner steps (alpha {config['inner_lr']}), "
        f"{config['num_steps']} steps, workdir {workdir}",
        flush=True,
    )
    trainer = Trainer(
        learner,
        workdir,
        data.train,
        data.val if config["val_tasks"] else None,
        log_every=config["log_every"],
        eval_every=config["eval_every"],
        checkpoint_every=config["checkpoint_every"],
        print_fn=lambda line: print(line, flush=True),
    )
    start = time.perf_counter()
    summary = trainer.train(config["num_steps"])
    logging.info("training finished: %s (%.0f s)", summary, time.perf_counter() - start)
    if FLAGS.evaluate and workdir == FLAGS.workdir:  # the chief evaluates
        evaluate_workdir(workdir, trainer=trainer, data=data, config=config)


def run() -> None:
    """The console script ``tfmeta-train``."""
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
