"""LEO, miniImageNet 5-way 5-shot, with the hyperparameters tuned for this
setting in the reference code's README (google-deepmind/leo); everything else
as ``leo_reference``. Reported test accuracy: paper 77.59 +- 0.12%, reference code
77.65 +- 0.09%. Meta-test as the reference: all 595 remaining examples of each
class as queries (600 per class), 10000 tasks.

  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --config=leo_miniimagenet_5shot --data_dir=$EMBEDDINGS \\
      --workdir=/tmp/tfmeta_runs/leo_miniimagenet_5shot

$EMBEDDINGS holds the published embeddings
(http://storage.googleapis.com/leo-embeddings/embeddings.zip, unzipped):
$EMBEDDINGS/miniImageNet/center/{train,val,test}_embeddings.pkl.
"""

from . import leo_reference


def get_config() -> dict:
    config = leo_reference.get_config()
    config.update(
        {
            "embedding_dataset": "miniImageNet",
            "k_shot": 5,
            "eval_q_query": 595,
            "val_tasks": 2000,
            "test_tasks": 10000,
            "outer_lr": 4.102361e-4,
            "l2_penalty_weight": 8.540338e-9,
            "orthogonality_penalty_weight": 1.523998e-3,
            "dropout_rate": 0.300299,
            "kl_weight": 0.466387,
            "encoder_penalty_weight": 2.661608e-7,
        }
    )
    return config
