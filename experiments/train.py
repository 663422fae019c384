"""Meta-trains a learner, then evaluates it on the fixed meta-test tasks.

  python -m experiments.train --algorithm=maml --dataset=omniglot \
      --n_way=5 --k_shot=1 --num_steps=2000 --workdir=/tmp/tfmeta_runs/maml

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
from tfmeta.configs import BASE
from tfmeta.configs.build import build_learner, build_model
from tfmeta.core.outer_optimizers import ANNEALED
from tfmeta.data.tasks import task_sets, train_n_way

from . import InputError, checks, configure_runtime, memory, run_binary
from .flags import FLAGS, flag_message, resolved_config

# What a resumed run may change: its length, how often it logs and saves, the
# meta-test-only settings, where the data is read from and how the same
# computation is executed. Every other setting changes what the run computes
# (its data, tasks, model, optimizers, seeds, validation) and is refused
# (README, "Resuming"); a config key added later is refused by default.
RESUME_MAY_CHANGE = (
    "num_steps",
    "log_every",
    "checkpoint_every",
    "test_tasks",
    "report_inner_steps",
    "data_dir",
    "jit_compile",
    "task_execution",
    "unroll_inner_loop",
    "recompute",
    "recompute_steps",
)

flags.DEFINE_bool("evaluate", True, "evaluate on the meta-test tasks after training")
flags.DEFINE_enum(
    "strategy",
    "default",
    ["default", "mirrored", "multi_worker"],
    "default: one device; mirrored: the meta-batch split across this host's GPUs "
    "(or --cpu_replicas logical CPUs); multi_worker: across the hosts of TF_CONFIG",
)
# More logical devices than this only slow the step (each replica runs its
# share of the meta-batch); creating 2048 takes 15 s and 100000 hangs.
MAX_CPU_REPLICAS = 256
flags.DEFINE_integer(
    "cpu_replicas",
    0,
    "with --strategy=mirrored and no GPU: split the CPU into this many logical devices",
    lower_bound=0,
    upper_bound=MAX_CPU_REPLICAS,
)


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError(
            "--workdir is required (the run's folder; rerun with the same one to resume)"
        )
    try:
        config = resolved_config()
        checks.check_config(config)
        checks.check_output_folder(FLAGS.workdir, "workdir")
    except (ValueError, *checks.FOLDER_ERRORS) as error:  # its message, no traceback
        raise InputError(flag_message(error)) from error
    if FLAGS.cpu_replicas > config["meta_batch_size"]:
        raise InputError(
            f"--cpu_replicas={FLAGS.cpu_replicas} is more than the "
            f"--meta_batch_size={config['meta_batch_size']} tasks a meta-step splits"
        )
    from tfmeta.training.distribute import make_strategy, worker_workdir

    # Before any other TensorFlow work: malloc arenas, thread pools and
    # logical devices are fixed once it starts.
    configure_runtime(
        FLAGS.cpu_threading,
        FLAGS.malloc_arenas,
        config["jit_compile"],
        config["meta_batch_size"],
    )
    try:
        strategy = make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
    except ValueError as error:
        raise InputError(str(error)) from error
    replicas = strategy.num_replicas_in_sync
    if config["meta_batch_size"] % replicas:
        raise InputError(
            f"--meta_batch_size={config['meta_batch_size']} does not split over the "
            f"{replicas} replicas of --strategy={FLAGS.strategy}: use a multiple of {replicas}"
        )
    try:  # what the learner declares it supports, e.g. one device only
        get_algorithm(config["algorithm"]).learner.check_capabilities(
            config["task_weighting"], config["task_execution"], replicas=replicas
        )
    except ValueError as error:
        raise InputError(f"--strategy={FLAGS.strategy}: {error}") from error
    workdir = worker_workdir(FLAGS.workdir, strategy)
    from tfmeta.training import (
        CheckpointError,
        NonFiniteLossError,
        Trainer,
        Workdir,
        WorkdirLockedError,
        check_resume,
    )

    from .evaluate import evaluate_workdir

    # Everything that can fail on user input fails here, before anything is
    # written: missing data, too few classes or images, a setting that
    # resuming would change, a learner that cannot be built.
    run = Workdir(workdir)
    try:
        data = task_sets(config)
        memory.check_data_memory(config, data)
        config["data_source"] = data.split
        stored = run.read_config() if run.has_config() else None
        if stored is None and run.has_checkpoint():
            raise ValueError(
                f"{workdir} holds checkpoints but no config.json: restore it or use a new --workdir"
            )
        if stored is not None:
            check_resume(stored, config, may_change=RESUME_MAY_CHANGE, defaults=BASE)
        # Fixed when the run starts: the length of a schedule over the run (a
        # stored 0, a run of num_steps=0, is fixed by its first longer rerun).
        config["schedule_steps"] = (
            stored.get("schedule_steps", stored.get("num_steps")) if stored else None
        ) or config["num_steps"]
        with strategy.scope():
            # A pretrained backbone starts a new run only: a resumed one's
            # checkpoint holds theta (and would overwrite it all anyway).
            model = build_model(
                config, data.input_shape, pretrained=not run.has_checkpoint()
            )
            learner = build_learner(config, model)
    except (FileNotFoundError, ValueError, ConnectionError) as error:
        raise InputError(flag_message(error)) from error
    trainer = Trainer(
        learner,
        run,
        data.train,
        data.val if config["val_tasks"] else None,
        log_every=config["log_every"],
        eval_every=config["eval_every"],
        checkpoint_every=config["checkpoint_every"],
        print_fn=lambda line: print(line, flush=True),
    )
    try:
        with run.locked():
            _describe(config, data, workdir, replicas, resuming=stored is not None)
            trainer.resume()
            run.write_config(config)
            start = time.perf_counter()
            summary = trainer.train(config["num_steps"])
            logging.info(
                "training finished: %s (%.0f s)", summary, time.perf_counter() - start
            )
            if FLAGS.evaluate and workdir == FLAGS.workdir:  # the chief evaluates
                # the run's validation history holds the best checkpoint's figure
                evaluate_workdir(
                    workdir,
                    learner=learner,
                    data=data,
                    config=config,
                    validation_pass=False,
                )
    except (WorkdirLockedError, CheckpointError) as error:
        raise InputError(str(error)) from error
    except NonFiniteLossError as error:  # exits non-zero, results untouched
        raise SystemExit(f"training stopped: {error}") from error


def training_summary(config) -> str:
    """What a meta-step trains on, in one line: the task (K points of a sine
    for sinusoid; N-way K-shot with its training way otherwise), the
    meta-batch, the adaptation (inner steps where the algorithm has them, and
    how queries are normalized where the model has batch norm) and the run's
    length."""
    shots = config["train_k_shot"] or config["k_shot"]
    if config["dataset"] == "sinusoid":
        task = f"K={shots} sinusoid regression"
    else:
        task = f"{train_n_way(config)}-way {shots}-shot"
    parts = [f"{task} training", f"meta-batch {config['meta_batch_size']}"]
    if (
        config["inner_steps"]
        and "inner_lr" in get_algorithm(config["algorithm"]).defaults
    ):
        steps = config["inner_steps"]
        parts.append(
            f"{steps} inner step{'s' * (steps != 1)} (alpha {config['inner_lr']})"
        )
    if (
        config["dataset"] != "sinusoid"
        and "transductive" in get_algorithm(config["algorithm"]).defaults
    ):
        parts.append(
            "queries normalized by their own batch (transductive)"
            if config["transductive"]
            else "queries normalized by the support set, as served"
        )
    parts.append(f"{config['num_steps']} step{'s' * (config['num_steps'] != 1)}")
    return ", ".join(parts)


def _describe(config, data, workdir: str, replicas: int, resuming: bool) -> None:
    if replicas > 1:
        print(
            f"{FLAGS.strategy} strategy: {replicas} replicas, "
            f"{config['meta_batch_size'] // replicas} tasks each per meta-step"
        )
    print(
        f"{'resuming' if resuming else 'starting'} {config['algorithm']} on {data.description}"
    )
    print(f"{training_summary(config)}, workdir {workdir}", flush=True)
    if (
        config["outer_optimizer"] in ANNEALED
        and config["num_steps"] > config["schedule_steps"]
    ):
        print(
            f"{config['outer_optimizer']}: the outer learning rate reaches final_outer_lr "
            f"{config['final_outer_lr']} at step {config['schedule_steps']} (the run's "
            "first num_steps) and stays there"
        )


def run() -> None:
    """The console script ``tfmeta-train``."""
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
