"""MAML / FOMAML on sinusoid regression, as in Finn et al. 2017 (section 5.1):
MLP 2x40 ReLU, K = 10 points, alpha = 0.01, 1 inner step, meta-batch 25,
Adam beta = 1e-3, 70000 meta-iterations. Evaluation reports MSE after 1, 5
and 10 steps (the paper's figure 3) on 100 query points per task.

With K = 5 points, one step of training leaves a few tasks to diverge over
the 10 steps of evaluation; training with two steps keeps every task stable
(BUILD_NOTES.md: MSE 0.26 after 10 steps, 40000 meta-steps):

  python -m experiments.train --algorithm=maml --dataset=sinusoid \
      --k_shot=10 --workdir=/tmp/tfmeta_runs/maml_sinusoid
  python -m experiments.train --algorithm=maml --dataset=sinusoid \
      --k_shot=5 --inner_steps=2 --num_steps=40000 --workdir=/tmp/tfmeta_runs/maml_sinusoid_k5
"""


def get_config() -> dict:
    return {
        "k_shot": 10,
        "q_query": 10,
        "eval_q_query": 100,
        "inner_lr": 0.01,
        "inner_steps": 1,
        "eval_inner_steps": 10,
        "report_inner_steps": [1, 5, 10],
        "meta_batch_size": 25,
        "outer_optimizer": "adam",
        "outer_lr": 1e-3,
        "num_steps": 70000,
        "val_tasks": 100,
        "eval_every": 1000,
        "checkpoint_every": 1000,
    }
