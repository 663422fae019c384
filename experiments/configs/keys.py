"""What each config key means: the help of its flag (``experiments/flags.py``
defines one flag per key, typed by its default).

A key whose default is None names its type in ``TYPES``; ``INTERNAL`` keys
are written by the binaries, not set by users.
"""

from __future__ import annotations

HELP: dict[str, str] = {
    "n_way": "classes per task (N)",
    "k_shot": "support examples per class at test (K); sinusoid: support points",
    "train_k_shot": "support examples per class in meta-training (default k_shot; Reptile: 10)",
    "q_query": "query examples per class in meta-training",
    "eval_q_query": "query examples per class in meta-validation/test tasks",
    "meta_batch_size": "tasks per meta-step",
    "inner_steps": "inner steps in meta-training",
    "second_order_steps": "MAML: second derivatives through only the last this many inner steps (default all)",
    "recompute_steps": "MAML with --recompute: recompute the activations of only the first this many inner steps and keep the later ones' (default all but the last)",
    "eval_inner_steps": "inner steps at meta-validation/test",
    "inner_batch_size": "Reptile: examples per inner step in training",
    "eval_inner_batch_size": "Reptile: examples per inner step at evaluation",
    "num_steps": "meta-training steps",
    "seed": "seed of the model init and the training task stream",
    "split_seed": "seed of the class split (kept fixed to compare runs on the same classes)",
    "test_seed": "seed of the fixed meta-test tasks (validation uses test_seed + 1)",
    "val_tasks": "meta-validation tasks per validation (0: none)",
    "test_tasks": "meta-test tasks in the final evaluation",
    "eval_batch_size": "tasks per evaluation batch",
    "image_size": "image side after resizing",
    "channels": "image channels (folder dataset)",
    "filters": "conv filters per block",
    "depth": "conv blocks",
    "log_every": "steps between log lines and summaries",
    "eval_every": "steps between meta-validations",
    "checkpoint_every": "steps between checkpoints",
    "num_latents": "LEO: h, the dimension of a class code z",
    "finetune_steps": "LEO: fine-tuning steps on the decoded weights w",
    "inner_lr": "alpha, the inner learning rate",
    "outer_lr": "beta (MAML) or initial epsilon (Reptile), the outer learning rate",
    "final_outer_lr": "annealed_sgd: learning rate at num_steps",
    "inner_beta1": "inner Adam beta1",
    "gradient_clip_norm": "clip the meta-gradient by global norm",
    "noisy_task_fraction": "fraction of meta-training tasks whose labels are shuffled (a noisy task distribution)",
    "finetune_lr": "LEO: initial eta, the per-dimension fine-tuning learning rate",
    "kl_weight": "LEO: beta, weight of the KL term",
    "encoder_penalty_weight": "LEO: gamma, weight of ||stopgrad(z') - z||^2",
    "l2_penalty_weight": "LEO: lambda_1, weight of the L2 penalty",
    "orthogonality_penalty_weight": "LEO: lambda_2, weight of the decoder orthogonality penalty",
    "dropout_rate": "LEO: dropout on the input embeddings in meta-training",
    "gradient_clip_value": "LEO: clip each meta-gradient entry to [-v, v]",
    "gradient_clip_variable_norm": "LEO: then clip each variable's meta-gradient to this norm",
    "data_dir": "Omniglot archives (zips or folders) or, with --dataset=folder, a root with train/ val/ test/; default $TFMETA_OMNIGLOT_DIR, else tensorflow-datasets; --dataset=embeddings: the embeddings root",
    "split_protocol": "Omniglot class split: auto | lake | maml | random",
    "rotations": "rotation classes on: train | all | none",
    "inner_optimizer": "sgd | adam",
    "outer_optimizer": "adam | sgd | annealed_sgd",
    "pooling": "stride | max",
    "adapt_variables": "all | head (ANIL)",
    "task_weighting": "uniform | gradient_agreement (Eshratifar et al. 2018)",
    "task_execution": "loop (one per-task call per task in the graph) | map_fn (tf.map_fn over the tasks: compile time independent of the meta-batch size); MAML, FOMAML, Reptile",
    "model": "conv4 | mlp | linear | leo (default: by dataset and algorithm)",
    "embedding_dataset": "embeddings: the dataset folder under --data_dir (e.g. miniImageNet, omniglot)",
    "embedding_crop": "embeddings: the crop folder (center | multiview)",
    "kl_estimator": "LEO: sample (one-sample log q - log p, reference code) | analytic",
    "transductive": "normalize queries with their own batch statistics (else with the support set's)",
    "jit_compile": "compile the meta-steps with XLA",
    "recompute": "MAML (second order): keep only each inner step's parameters and recompute its activations in the backward pass (less memory with many inner steps, ~1 more inner step of compute each)",
    "unroll_inner_loop": "unroll a differentiated inner loop (second-order MAML) in Python (default); --nounroll_inner_loop: a differentiated tf.while_loop (compile time and graph memory flat in the inner steps)",
    "deterministic": "LEO: z and w are the means of their distributions (no sampling, no KL)",
    "hidden": "MLP hidden sizes (sinusoid)",
    "report_inner_steps": "extra inner-step counts to report at meta-test",
}

# Types of the keys whose default is None (the others: their default's type).
# "ints": a comma-separated list of integers.
TYPES: dict[str, type | str] = {
    "train_k_shot": int,
    "second_order_steps": int,
    "recompute_steps": int,
    "inner_batch_size": int,
    "eval_inner_batch_size": int,
    "gradient_clip_norm": float,
    "model": str,
    "embedding_dataset": str,
    "num_latents": int,
    "gradient_clip_value": float,
    "gradient_clip_variable_norm": float,
    "hidden": "ints",
    "report_inner_steps": "ints",
}

# Written by the binaries (the run's data source, the schedule's length) or
# chosen by their own flags (--algorithm, --dataset).
INTERNAL = ("algorithm", "dataset", "data_source", "schedule_steps")
