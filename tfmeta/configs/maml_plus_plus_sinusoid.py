"""MAML++ on sinusoid regression (the paper has no sinusoid experiment): the
MAML paper's setting (MLP 2x40, alpha = 0.01, meta-batch 25, 70000
meta-steps) with 5 inner steps in training and the multi-step loss over the
first 0.1 of the run, Adam beta = 1e-3 cosine-annealed to 1e-5; evaluation
reports MSE after 1, 5 and 10 steps. The MLP has no batch norm, so per-step
batch norm has nothing to act on. LSLR is off here: from alpha = 0.01, Adam
moves each learned rate by up to ~1e-3 a step (10% of its value) and K=5
meta-training diverged (non-finite loss at step 2838; at step 760 with
``--gradient_clip_norm=10``); ``--learned_step_sizes`` turns it on.

  python -m experiments.train --algorithm=maml_plus_plus --dataset=sinusoid \
      --k_shot=5 --workdir=/tmp/tfmeta_runs/maml_plus_plus_sinusoid
"""


def get_config() -> dict:
    return {
        "k_shot": 10,
        "q_query": 10,
        "eval_q_query": 100,
        "inner_lr": 0.01,
        "inner_steps": 5,
        "eval_inner_steps": 10,
        "report_inner_steps": [1, 5, 10],
        "meta_batch_size": 25,
        "outer_optimizer": "cosine_adam",
        "outer_lr": 1e-3,
        "final_outer_lr": 1e-5,
        "num_steps": 70000,
        "val_tasks": 100,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "multi_step_loss": True,
        "multi_step_loss_steps": 0.1,
        "learned_step_sizes": False,
        "per_step_batch_norm": False,
        "first_order_steps_of_run": 0.0,
    }
