"""LEO with the reference code's defaults (google-deepmind/leo ``config.py`` and
``runner.py``): the settings every other ``leo_*`` config starts from.

5-way, 15 query examples per class in meta-training, meta-batch 12, 5 latent
steps (alpha initialized to 1) then 5 fine-tuning steps (eta initialized to
0.001), h = 64 latent dimensions, Adam with lr 1e-4 on the meta-gradient
clipped to [-0.1, 0.1] and then to norm 0.1 per variable, 100000 steps, the
best checkpoint by meta-validation every 1000 steps. Loss weights: beta
(kl_weight) 1e-3, gamma (encoder_penalty_weight) 1e-9, lambda_1
(l2_penalty_weight) 1e-8, lambda_2 (orthogonality_penalty_weight) 1e-3,
dropout 0.5. The README's tuned values per setting are in
``leo_miniimagenet_{1,5}shot`` and ``leo_tieredimagenet_{1,5}shot``.

  python -m experiments.train --algorithm=leo --dataset=embeddings \\
      --config=leo_reference --data_dir=$EMBEDDINGS --embedding_dataset=miniImageNet \\
      --k_shot=1 --workdir=/tmp/tfmeta_runs/leo_reference
"""


def get_config() -> dict:
    return {
        "model": "leo",
        "embedding_crop": "center",
        "rotations": "none",
        "n_way": 5,
        "k_shot": 1,
        "q_query": 15,
        "meta_batch_size": 12,
        "num_latents": 64,
        "inner_lr": 1.0,  # alpha's initial value
        "inner_steps": 5,
        "eval_inner_steps": 5,
        "finetune_steps": 5,
        "finetune_lr": 1e-3,  # eta's initial value
        "kl_weight": 1e-3,
        "encoder_penalty_weight": 1e-9,
        "l2_penalty_weight": 1e-8,
        "orthogonality_penalty_weight": 1e-3,
        "dropout_rate": 0.5,
        "kl_estimator": "sample",
        "deterministic": False,
        "outer_optimizer": "adam",
        "outer_lr": 1e-4,
        "gradient_clip_value": 0.1,
        "gradient_clip_variable_norm": 0.1,
        "gradient_clip_norm": None,
        "num_steps": 100000,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "log_every": 100,
    }
