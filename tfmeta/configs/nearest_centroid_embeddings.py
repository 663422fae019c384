"""Nearest-centroid classification on embedding vectors (``experiments.embed``'s
files): the baseline LEO and the linear MAML are read against, on the same
episodes and test tasks. The prototype of a class is the mean of its support
embeddings; a query goes to the prototype of highest cosine similarity
(temperature 10, as ``nearest_centroid_omniglot``). No meta-training: one
meta-step, which changes nothing, writes the checkpoint that evaluation and
export read.

  python -m experiments.train --algorithm=nearest_centroid --dataset=embeddings \\
      --data_dir=/tmp/tfmeta_runs/embeddings --k_shot=1 --workdir=/tmp/tfmeta_runs/nc_embeddings
"""


def get_config() -> dict:
    return {
        "model": "linear",
        "embedding_dataset": "omniglot",
        "embedding_crop": "center",
        "rotations": "none",
        "q_query": 15,
        "eval_q_query": 15,
        "meta_batch_size": 1,
        "num_steps": 1,
        "log_every": 1,
        "eval_every": 1,
        "checkpoint_every": 1,
        "inner_steps": 0,
        "eval_inner_steps": 0,
        "val_tasks": 200,
        "test_tasks": 600,
    }
