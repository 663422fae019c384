"""LEO, tieredImageNet 5-way 1-shot, with the hyperparameters tuned for this
setting in the reference code's README (google-deepmind/leo); everything else
as ``leo_reference``. Reported test accuracy: paper 66.33 +- 0.05%, reference code
66.25 +- 0.14%. Meta-test as the reference: all 599 remaining examples of each
class as queries (600 per class), 10000 tasks.

  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --config=leo_tieredimagenet_1shot --data_dir=$EMBEDDINGS \\
      --workdir=/tmp/tfmeta_runs/leo_tieredimagenet_1shot

$EMBEDDINGS holds the published embeddings
(http://storage.googleapis.com/leo-embeddings/embeddings.zip, unzipped):
$EMBEDDINGS/tieredImageNet/center/{train,val,test}_embeddings.pkl.
"""

from . import leo_reference


def get_config() -> dict:
    config = leo_reference.get_config()
    config.update(
        {
            "embedding_dataset": "tieredImageNet",
            "k_shot": 1,
            "eval_q_query": 599,
            "val_tasks": 2000,
            "test_tasks": 10000,
            "outer_lr": 8.659053e-4,
            "l2_penalty_weight": 4.148858e-10,
            "orthogonality_penalty_weight": 5.451078e-3,
            "dropout_rate": 0.475126,
            "kl_weight": 2.034189e-3,
            "encoder_penalty_weight": 8.302962e-5,
        }
    )
    return config
