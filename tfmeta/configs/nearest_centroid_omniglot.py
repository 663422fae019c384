"""Nearest-centroid classification on Omniglot with a fixed embedding.

The backbone is ``experiments/embed.py``'s (4 blocks of 64 3x3 filters,
batch norm, ReLU, 2x2 max pooling, then flatten), pretrained by ordinary
classification on the meta-train classes and loaded by the binaries
(``pretrained_backbone``); the learner does not train it. Cosine similarity
to L2-normalized prototypes with temperature 10 (the learner's defaults, as
Meta-Baseline and "a good embedding is all you need"). One meta-step
(which changes nothing) writes the checkpoint that meta-validation, the
meta-test (5-way, 15 queries per class) and export read.

  python -m experiments.train --algorithm=nearest_centroid --dataset=omniglot \
      --k_shot=1 --workdir=/tmp/tfmeta_runs/nearest_centroid_omniglot
"""


def get_config() -> dict:
    return {
        "n_way": 5,
        "k_shot": 1,
        "q_query": 5,
        "eval_q_query": 15,
        "meta_batch_size": 1,
        "num_steps": 1,
        "log_every": 1,
        "eval_every": 1,
        "checkpoint_every": 1,
        "pooling": "max",
        "filters": 64,
        "depth": 4,
        "transductive": False,
        "inner_steps": 0,
        "eval_inner_steps": 0,
    }
