"""Meta-SGD on sinusoid regression (Li et al. 2017, section 4.1): MAML's
task distribution and regressor (MLP 2x40 ReLU), K = 10 support points (the
paper also reports 5 and 20: ``--k_shot``), one inner step in meta-training
and at meta-test, alpha drawn from U[0.005, 0.1], second order. Meta-batch
25, Adam beta = 1e-3 and 70000 meta-iterations are MAML's sinusoid settings
(Finn et al. 2017, section 5.1). ``inner_lr`` is alpha's value with
``--meta_sgd_init=constant`` only.

  python -m experiments.train --algorithm=meta_sgd --dataset=sinusoid \
      --k_shot=10 --workdir=/tmp/tfmeta_runs/meta_sgd_sinusoid
"""


def get_config() -> dict:
    return {
        "meta_sgd_init": "uniform",
        "k_shot": 10,
        "q_query": 10,
        "eval_q_query": 100,
        "inner_lr": 0.01,
        "inner_steps": 1,
        "eval_inner_steps": 1,
        "report_inner_steps": [],
        "meta_batch_size": 25,
        "outer_optimizer": "adam",
        "outer_lr": 1e-3,
        "num_steps": 70000,
        "val_tasks": 100,
        "eval_every": 1000,
        "checkpoint_every": 1000,
    }
