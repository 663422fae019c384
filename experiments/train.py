"""Meta-trains a learner, then evaluates it on the fixed meta-test tasks.

  python -m experiments.train --algorithm=maml --dataset=omniglot \
      --n_way=5 --k_shot=1 --num_steps=2000 --workdir=/tmp/tfmeta/maml

Rerunning the same command resumes from the last checkpoint. Results (mean
and 95% interval over the meta-test tasks) are printed and written to
``<workdir>/results.json``; the best checkpoint by meta-validation is used.
"""

from __future__ import annotations

import time

from absl import app, flags, logging

from experiments import common
from experiments.configs import BASE, FIXED_KEYS
from experiments.flags import FLAGS, resolved_config

flags.DEFINE_bool("evaluate", True, "evaluate on the meta-test tasks after training")


def main(argv):
    del argv
    if not FLAGS.workdir:
        raise app.UsageError(
            "--workdir is required (the run's folder; rerun with the same one to resume)"
        )
    config = resolved_config()
    common.check_config(config)
    # Everything that can fail on user input fails here, before training starts.
    data = common.build_data(config)
    config["data_source"] = data.split

    from experiments.evaluate import evaluate_workdir
    from tfmeta.training import Trainer, prepare_workdir

    resuming = prepare_workdir(FLAGS.workdir, config, FIXED_KEYS, defaults=BASE)
    model = common.build_model(config, data.input_shape)
    learner = common.build_learner(config, model)
    print(
        f"{'resuming' if resuming else 'starting'} {config['algorithm']} on {data.description}"
    )
    print(
        f"{config['n_way']}-way {config['train_k_shot'] or config['k_shot']}-shot training, meta-batch "
        f"{config['meta_batch_size']}, {config['inner_steps']} inner steps (alpha {config['inner_lr']}), "
        f"{config['num_steps']} steps, workdir {FLAGS.workdir}",
        flush=True,
    )
    trainer = Trainer(
        learner,
        FLAGS.workdir,
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
    if FLAGS.evaluate:
        evaluate_workdir(FLAGS.workdir, trainer=trainer, data=data, config=config)


if __name__ == "__main__":
    app.run(main)
