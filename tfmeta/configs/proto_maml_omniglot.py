"""Proto-MAML on Omniglot (Triantafillou et al. 2020), 5-way 1-shot by default.

Meta-Dataset trains fo-Proto-MAML (first order, alpha ~ 0.1, a few inner
steps) on large backbones over many datasets; it has no Omniglot-only
5-way setting with MAML's network. Here the network and schedule are
MAML's Omniglot ones (Finn et al. 2017): strided 4-block conv net,
alpha = 0.4, 1 inner step in training and 3 at test, meta-batch 32, Adam
beta = 1e-3, 60000 meta-iterations, second order. So Proto-MAML differs
from the ``maml_omniglot`` run only in its prototype head, and the two
compare directly; one second-order step on this small net costs little.
Variant "first_order": Meta-Dataset's recipe, first order with alpha = 0.1
and 5 inner steps in training and at test.

  python -m experiments.train --algorithm=proto_maml --dataset=omniglot \
      --n_way=5 --k_shot=1 --workdir=/tmp/tfmeta_runs/proto_maml_omniglot
  python -m experiments.train --algorithm=proto_maml --dataset=omniglot \
      --config=proto_maml_omniglot:first_order --workdir=/tmp/tfmeta_runs/fo_proto_maml
"""

VARIANTS = ("second_order", "first_order")


def get_config(variant: str = "second_order") -> dict:
    config = {
        "first_order": False,
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
    if variant == "first_order":
        config.update(first_order=True, inner_lr=0.1, inner_steps=5, eval_inner_steps=5)
    return config
