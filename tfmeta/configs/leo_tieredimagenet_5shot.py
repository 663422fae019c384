"""LEO, tieredImageNet 5-way 5-shot, with the hyperparameters tuned for this
setting in the reference code's README (google-deepmind/leo); everything else
as ``leo_reference``. Reported test accuracy: paper 81.44 +- 0.09%, reference code
81.77 +- 0.09%. Meta-test as the reference: all 595 remaining examples of each
class as queries (600 per class), 10000 tasks.

  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --config=leo_tieredimagenet_5shot --data_dir=$EMBEDDINGS \\
      --workdir=/tmp/tfmeta_runs/leo_tieredimagenet_5shot

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
            "k_shot": 5,
            "eval_q_query": 595,
            "val_tasks": 2000,
            "test_tasks": 10000,
            "outer_lr": 6.110314e-4,
            "l2_penalty_weight": 1.690399e-10,
            "orthogonality_penalty_weight": 2.481216e-2,
            "dropout_rate": 0.415158,
            "kl_weight": 1.622811,
            "encoder_penalty_weight": 2.672450e-5,
        }
    )
    return config
