"""LEO, miniImageNet 5-way 1-shot, with the hyperparameters tuned for this
setting in the reference code's README (google-deepmind/leo); everything else
as ``leo_reference``. Reported test accuracy: paper 61.76 +- 0.08%, reference code
61.89 +- 0.16%. Meta-test as the reference: all 599 remaining examples of each
class as queries (600 per class), 10000 tasks.

  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --config=leo_miniimagenet_1shot --data_dir=$EMBEDDINGS \\
      --workdir=/tmp/tfmeta_runs/leo_miniimagenet_1shot

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
            "k_shot": 1,
            "eval_q_query": 599,
            "val_tasks": 2000,
            "test_tasks": 10000,
            "outer_lr": 2.739071e-4,
            "l2_penalty_weight": 3.623413e-10,
            "orthogonality_penalty_weight": 0.188103,
            "dropout_rate": 0.307651,
            "kl_weight": 0.756143,
            "encoder_penalty_weight": 5.756821e-6,
        }
    )
    return config
