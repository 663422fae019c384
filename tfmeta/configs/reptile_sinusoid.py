"""Reptile on sinusoid regression, following the Reptile paper's sine-wave
demonstration (inner SGD with lr 0.02 on mini-batches of 10, outer step
epsilon 0.1 annealed linearly to 0) on the MAML paper's task distribution and
MLP 2x40. Evaluation: MSE after 1, 5 and 10 steps, 100 query points per task.

  python -m experiments.train --algorithm=reptile --dataset=sinusoid \
      --k_shot=10 --workdir=/tmp/tfmeta_runs/reptile_sinusoid
"""


def get_config() -> dict:
    return {
        "k_shot": 10,
        "q_query": 10,
        "eval_q_query": 100,
        "inner_optimizer": "sgd",
        "inner_lr": 0.02,
        "inner_steps": 5,
        "inner_batch_size": 10,
        "eval_inner_steps": 10,
        "report_inner_steps": [1, 5, 10],
        "meta_batch_size": 5,
        "outer_optimizer": "annealed_sgd",
        "outer_lr": 0.1,
        "final_outer_lr": 0.0,
        "num_steps": 30000,
        "val_tasks": 100,
        "eval_every": 1000,
        "checkpoint_every": 1000,
    }
