"""MAML / FOMAML with a linear classifier (logits = x W + b) on embedding
vectors: the baseline for LEO on the same embeddings and episodes (meta-batch
12, 15 query examples per class in meta-training, as ``leo_omniglot``).

The embeddings are L2-normalized (and, from ``experiments.embed``, non-negative:
they share a large common direction). alpha = 2 was picked by adapting from
W = 0, b = 0 on the validation classes of quick smoke embeddings: 5 steps with
alpha in [1, 4] give the same accuracy, alpha = 10 oscillates (the bias and the
common direction overshoot). With random class labels per task, the meta-learned
initialization of a linear model cannot favour a class, so alpha matters most:
sweep it on the validation classes of new embeddings (--inner_lr).

  python -m experiments.train --algorithm=maml --dataset=embeddings \\
      --data_dir=/tmp/tfmeta_runs/embeddings --embedding_dataset=omniglot \\
      --k_shot=1 --workdir=/tmp/tfmeta_runs/maml_linear_1shot
"""


def get_config() -> dict:
    return {
        "model": "linear",
        "embedding_dataset": "omniglot",
        "embedding_crop": "center",
        "rotations": "none",
        "q_query": 15,
        "eval_q_query": 15,
        "meta_batch_size": 12,
        "inner_lr": 2.0,
        "inner_steps": 5,
        "eval_inner_steps": 5,
        "outer_optimizer": "adam",
        "outer_lr": 1e-3,
        "num_steps": 20000,
        "val_tasks": 200,
        "test_tasks": 600,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "log_every": 100,
    }
