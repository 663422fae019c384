"""MAML++ on Omniglot, as the authors' configs (AntreasAntoniou/
HowToTrainYourMAMLPytorch, ``omniglot_maml++-omniglot_1_8_0.1_64_5_0.json``):
meta-batch 8, 5 inner steps in training and at test, LSLR initialized to
alpha = 0.1, per-step batch norm, multi-step loss for the first 10 of 100
epochs (0.1 of the run), derivative-order annealing off
(``first_order_to_second_order_epoch: -1``: second order from the start),
Adam beta = 1e-3 cosine-annealed to 1e-5 over 100 epochs of 500 iterations
(50000 meta-steps), 4 blocks of 64 filters with max pooling, one query
example per class in training, normalization layers not adapted in the inner
loop, batch statistics at evaluation too (the code; the paper's per-step
running statistics are ``--running_statistics``). Variant "20way": 20 classes per task (the same settings otherwise, as
``..._1_8_0.1_64_20_0.json``). The paper reports the top-5 ensemble's
accuracy; we report single models.

  python -m experiments.train --algorithm=maml_plus_plus --dataset=omniglot \
      --n_way=5 --k_shot=1 --workdir=/tmp/tfmeta_runs/maml_plus_plus
"""

VARIANTS = ("5way", "20way")


def get_config(variant: str = "5way") -> dict:
    config = {
        "inner_lr": 0.1,
        "inner_steps": 5,
        "eval_inner_steps": 5,
        "meta_batch_size": 8,
        "outer_optimizer": "cosine_adam",
        "outer_lr": 1e-3,
        "final_outer_lr": 1e-5,
        "num_steps": 50000,
        "pooling": "max",
        "q_query": 1,
        "adapt_variables": "all_but_norm",
        "multi_step_loss": True,
        "multi_step_loss_steps": 0.1,
        "learned_step_sizes": True,
        "per_step_batch_norm": True,
        "first_order_steps_of_run": 0.0,
        "running_statistics": False,
    }
    if variant == "20way":
        config.update(n_way=20)
    return config
