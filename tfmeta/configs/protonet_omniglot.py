"""Prototypical Networks on Omniglot, as in Snell et al. 2017 (section 3.1).

Training episodes of 60 classes (``train_n_way``) with 5 query points per
class and as many shots as at test (1 or 5: ``--k_shot``), one episode per
update (meta-batch 1); squared Euclidean distance; Adam from 1e-3; 4 blocks
of 64 3x3 filters, batch norm, ReLU and 2x2 max pooling; meta-test on 5-way
tasks (``--n_way=20`` for the paper's 20-way results) with 15 queries per
class. Batch norm normalizes queries with the support set's statistics
(``transductive=False``), in training as at test and serving.

Where we differ from the paper:
* the learning rate is halved every 2000 episodes as in the paper
  (``step_adam``), and the best checkpoint by meta-validation is kept where
  the paper stops early on validation loss;
* 20000 episodes (the paper trains until validation stops improving);
* the max pooling pads ("same"): 28 -> 14 -> 7 -> 4 -> 2, d = 2*2*64 = 256
  features where the paper's floor pooling gives 1*1*64 = 64;
* the class split and rotations are the other Omniglot configs' (Lake's
  split, rotations as new classes in meta-training only), so that results
  compare on the same meta-test tasks; the paper's Vinyals split with
  rotated test classes is closest with ``--split_protocol=maml
  --rotations=all``.

  python -m experiments.train --algorithm=protonet --dataset=omniglot \
      --k_shot=1 --workdir=/tmp/tfmeta_runs/protonet_omniglot

Variant "alphabet": tfmeta's measured recipe for 20-way 1-shot within one
held-out alphabet (docs/results.md, "One-shot on alphabets never seen"):
whole alphabets held out (``--split_protocol=alphabet``; ``--split_seed``
picks the split), small affine distortions of the training images
(``augment`` 1), 6000 episodes (the learning rate halved at 2000 and 4000),
and 8 distorted copies of every support set at validation, test and serving
(``support_copies``).

  python -m experiments.train --algorithm=protonet --dataset=omniglot \
      --config=protonet_omniglot:alphabet --workdir=/tmp/tfmeta_runs/protonet_alphabet

Variant "characters": tfmeta's measured recipe for 5-way 1-shot on held-out
characters (docs/results.md, "One-shot on alphabets never seen"): small
affine distortions in training (``augment`` 1), 2000 episodes, and 8
distorted copies of every support set and of every query at validation,
test and serving (``support_copies``, ``query_copies``; each query is still
answered on its own). An ensemble of two seeds (``experiments.evaluate`` and
``experiments.export`` with ``--ensemble``) reaches 99% served.

  python -m experiments.train --algorithm=protonet --dataset=omniglot \
      --config=protonet_omniglot:characters --workdir=/tmp/tfmeta_runs/protonet_characters
"""

VARIANTS = ("alphabet", "characters")

# The distortions, test-time copies and evaluation both recipes share.
_MEASURED = {
    "augment": 1.0,
    "eval_every": 500,
    "checkpoint_every": 500,
    "log_every": 100,
    "val_tasks": 100,
    "support_copies": 8,
}


def get_config(variant: str = "") -> dict:
    config = {
        "n_way": 5,
        "train_n_way": 60,
        "k_shot": 1,
        "q_query": 5,
        "eval_q_query": 15,
        "meta_batch_size": 1,
        "outer_optimizer": "step_adam",
        "outer_lr": 1e-3,
        "outer_lr_decay_steps": 2000,
        "outer_lr_decay_rate": 0.5,
        "num_steps": 20000,
        "pooling": "max",
        "filters": 64,
        "depth": 4,
        "transductive": False,
        "inner_steps": 0,
        "eval_inner_steps": 0,
    }
    if variant == "alphabet":
        config.update(_MEASURED, split_protocol="alphabet", n_way=20, num_steps=6000)
    if variant == "characters":
        config.update(_MEASURED, num_steps=2000, query_copies=8)
    return config
