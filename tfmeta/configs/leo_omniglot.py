"""LEO on Omniglot embeddings written by ``experiments.embed``. No published
tuning exists for Omniglot: the reference defaults of ``leo_reference``, with
20000 steps instead of 100000 and Adam's learning rate 5e-4 instead of the
default 1e-4 (all four tuned settings of the reference README use 2.7e-4 to
8.7e-4; 5e-4 is about their geometric mean). Episodes use the same class split
as the image runs; the training split holds the rotated characters as extra
classes when the embeddings were written with rotations.

  python -m experiments.embed --output_dir=/tmp/tfmeta_runs/embeddings
  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --data_dir=/tmp/tfmeta_runs/embeddings --k_shot=1 --workdir=/tmp/tfmeta_runs/leo_omniglot_1shot
"""

from . import leo_reference


def get_config() -> dict:
    config = leo_reference.get_config()
    config.update(
        {
            "embedding_dataset": "omniglot",
            "eval_q_query": 15,  # 20 drawings per character: K + 15 <= 20
            "outer_lr": 5e-4,
            "num_steps": 20000,
            "val_tasks": 200,
            "test_tasks": 600,
        }
    )
    return config
