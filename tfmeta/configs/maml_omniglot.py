"""MAML / FOMAML on Omniglot, as in Finn et al. 2017 (section 5.2, appendix A.1).

5-way: alpha = 0.4, 1 inner step in training, 3 at test, meta-batch 32, Adam
beta = 1e-3, 60000 meta-iterations, strided 4-block conv net (64 filters),
rotations by multiples of 90 degrees as new classes. The paper's 20-way
setting, variant "20way": alpha = 0.1, 5 inner steps (also at test),
meta-batch 16.
The MAML code samples as many query examples per class as support examples;
we train with ``q_query`` = 1 per class and evaluate on 15 per class.
The MAML code normalizes a query batch by its own statistics (transductive);
we normalize queries with the support set's statistics in training, as an
export serves (``--transductive`` for the code's way).

  python -m experiments.train --algorithm=maml --dataset=omniglot \
      --n_way=5 --k_shot=1 --workdir=/tmp/tfmeta_runs/maml_omniglot
  python -m experiments.train --algorithm=maml --dataset=omniglot \
      --config=maml_omniglot:20way --k_shot=1 --workdir=/tmp/tfmeta_runs/maml_20way

The recipe measured for tfmeta's served results (docs/results.md), variant
"pretrained": start from a backbone trained by classification on the
meta-train classes (``experiments.embed``, a max-pooling conv4; pass its
folder as ``--pretrained_backbone``), with the head of UNICORN-MAML
(``--algorithm=unicorn_maml``: every class's head starts at zero), 3000
meta-steps whose Adam rate falls by a cosine to 0, one inner step in
training and at test (more steps at alpha = 0.4 make some 5-shot and 20-way
tasks diverge), and the meta-test also reported after 3, 5 and 10 inner
steps. "pretrained_first_order": the same
start in first order, with alpha = 0.01, 5 inner steps (10 at test), plain
SGD at 0.005 annealed to 0 over 1500 meta-steps: the pretrained features
have squared norms of about 1500, and at alpha = 0.4 first-order
meta-training diverged (query loss 13-20 by step 250) where second order
learns to temper them; cosine Adam (1e-3, or 1e-4 with 3 inner steps) moved
every weight by its rate and lost validation accuracy.

  python -m experiments.embed --output_dir=/tmp/tfmeta_runs/backbone --max_steps=1200
  python -m experiments.train --algorithm=unicorn_maml --dataset=omniglot \
      --config=maml_omniglot:pretrained --pretrained_backbone=/tmp/tfmeta_runs/backbone \
      --workdir=/tmp/tfmeta_runs/maml_pretrained
"""

VARIANTS = ("5way", "20way", "pretrained", "pretrained_first_order")


def get_config(variant: str = "5way") -> dict:
    config = {
        "inner_lr": 0.4,
        "inner_steps": 1,
        "eval_inner_steps": 3,
        "meta_batch_size": 32,
        "outer_optimizer": "adam",
        "outer_lr": 1e-3,
        "num_steps": 60000,
        "pooling": "stride",
        "q_query": 1,
    }
    if variant.startswith("pretrained"):
        config.update(
            pooling="max",
            outer_optimizer="cosine_adam",
            final_outer_lr=0.0,
            num_steps=3000,
            eval_inner_steps=1,
            report_inner_steps=[3, 5, 10],
        )
    if variant == "pretrained_first_order":
        config.update(
            first_order=True,
            inner_lr=0.01,
            inner_steps=5,
            eval_inner_steps=10,
            outer_optimizer="annealed_sgd",
            outer_lr=0.005,
            num_steps=1500,
            report_inner_steps=[3, 30],
        )
    if variant == "20way":
        config.update(
            n_way=20,
            inner_lr=0.1,
            inner_steps=5,
            eval_inner_steps=5,
            meta_batch_size=16,
        )
    return config
