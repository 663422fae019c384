"""Meta-SGD on Omniglot (Li et al. 2017, section 4.2): MAML's network
(strided 4-block conv net, 64 filters) and one inner step, in meta-training
and at meta-test, theta' = theta - alpha ∘ grad, second order, alpha drawn
from U[0.005, 0.1]. The meta-batch (32 tasks at 5-way, 16 at 20-way), Adam
beta = 1e-3 and 60000 meta-iterations are MAML's Omniglot settings (Finn et
al. 2017). ``inner_lr`` is alpha's value with ``--meta_sgd_init=constant``
only (learn2learn's initialization). Variant "20way": 20-way, meta-batch 16.
Batch norm's scale and offset do not adapt in the inner loop (as MAML++'s
code; ``tfmeta.algorithms.meta_sgd`` says why ``--adapt_variables=all`` is
refused where TensorFlow runs its oneDNN kernels).

  python -m experiments.train --algorithm=meta_sgd --dataset=omniglot \
      --n_way=5 --k_shot=1 --workdir=/tmp/tfmeta_runs/meta_sgd_omniglot
"""

VARIANTS = ("5way", "20way")


def get_config(variant: str = "5way") -> dict:
    config = {
        "meta_sgd_init": "uniform",
        "inner_lr": 0.4,
        "inner_steps": 1,
        "eval_inner_steps": 1,
        "meta_batch_size": 32,
        "outer_optimizer": "adam",
        "outer_lr": 1e-3,
        "num_steps": 60000,
        "pooling": "stride",
        "q_query": 1,
        "adapt_variables": "all_but_norm",
    }
    if variant == "20way":
        config.update(n_way=20, inner_lr=0.1, meta_batch_size=16)
    return config
