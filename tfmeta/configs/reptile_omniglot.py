"""Reptile on Omniglot, as in Nichol et al. 2018 (openai/supervised-reptile's
``run_omniglot.sh``, which is transductive; here queries are normalized
with the support set's statistics, as served, unless ``--transductive``):
10 training shots per class, inner Adam
(lr 0.001, beta1 = 0) for 5 iterations on mini-batches of 10, meta-batch 5,
outer step epsilon 1.0 annealed linearly to 0 over 100000 iterations, and 50
inner iterations on mini-batches of 5 at evaluation.

  python -m experiments.train --algorithm=reptile --dataset=omniglot \
      --n_way=5 --k_shot=1 --workdir=/tmp/tfmeta_runs/reptile_omniglot

Variant "pretrained", the recipe measured for tfmeta's served results
(docs/results.md), with ``--algorithm=unicorn_reptile``: start from a
backbone trained by classification on the meta-train classes
(``experiments.embed``, a max-pooling conv4; pass its folder as
``--pretrained_backbone``), every task's head at zero (UNICORN-MAML's shared
start), inner SGD with alpha = 0.01 (5 steps in training, 10 at test on
the whole support set: the paper's test mini-batches of 5 would see each of
a 5-shot task's 25 examples only twice; the features' squared norms are
about 1500, and the paper's inner Adam moves every pretrained weight by its
full rate each step, which cost 5 points of validation accuracy in 250
meta-steps), epsilon 0.1 annealed to 0 over 3000 meta-steps (at 1.0
validation fell from step 250), and the meta-test also
reported after 3 and 50 inner steps.

  python -m experiments.embed --output_dir=/tmp/tfmeta_runs/backbone --max_steps=1200
  python -m experiments.train --algorithm=unicorn_reptile --dataset=omniglot \
      --config=reptile_omniglot:pretrained --pretrained_backbone=/tmp/tfmeta_runs/backbone \
      --workdir=/tmp/tfmeta_runs/reptile_pretrained
"""

VARIANTS = ("paper", "pretrained")


def get_config(variant: str = "paper") -> dict:
    config = {
        "train_k_shot": 10,
        "q_query": 1,
        "inner_optimizer": "adam",
        "inner_lr": 0.001,
        "inner_beta1": 0.0,
        "inner_steps": 5,
        "inner_batch_size": 10,
        "eval_inner_steps": 50,
        "eval_inner_batch_size": 5,
        "meta_batch_size": 5,
        "outer_optimizer": "annealed_sgd",
        "outer_lr": 1.0,
        "final_outer_lr": 0.0,
        "num_steps": 100000,
        "pooling": "stride",
    }
    if variant == "pretrained":
        config.update(
            pooling="max",
            inner_optimizer="sgd",
            inner_lr=0.01,
            eval_inner_steps=10,
            eval_inner_batch_size=None,
            outer_lr=0.1,
            num_steps=3000,
            report_inner_steps=[3, 50],
        )
    return config
