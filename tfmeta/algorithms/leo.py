"""LEO: Latent Embedding Optimization (Rusu et al., ICLR 2019).

For a task with support set D^tr (N classes, K embeddings x in R^d each) and
query set D^val: encode z from D^tr, adapt z in the latent space and then the
decoded classifier w (``leo_inner_loop``), and minimize over phi_e, phi_r,
phi_d, alpha and eta the outer objective
    L^val(w') + beta KL(q(z | D^tr) || N(0, I)) + gamma ||stopgrad(z') - z||^2
    + lambda_1 ||phi||^2 + lambda_2 ||C_d - I||^2
with the exact (second-order) meta-gradient. The classifier is softmax(w . x):
logits ``x w^T`` ``[M, N]``, no bias. Where we follow the reference code
(google-deepmind/leo) rather than the paper, term by term, and where the
paper: ``leo_losses``. Capabilities: "uniform" task weighting only (LEO's w'
is not in the space of its meta-parameters, so Gradient Agreement's update
vectors are undefined), tasks in a loop, one device.

  python -m experiments.train --algorithm=leo --dataset=embeddings --data_dir=<root> --workdir=/tmp/leo
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import tensorflow as tf

from tfmeta.algorithms import leo_inner_loop, leo_losses
from tfmeta.algorithms.leo_losses import LEOSettings
from tfmeta.core.algorithm import Algorithm, Config, keyword_defaults
from tfmeta.core.executor import TaskResult
from tfmeta.core.inner_loop import check_unrolled_steps
from tfmeta.core.learner import Learner
from tfmeta.models.leo import LEOModel, LEOParameters, leo_model

SETTINGS = tuple(field.name for field in dataclasses.fields(LEOSettings))


class LEO(Learner):
    """Latent Embedding Optimization over embedding vectors ``[N*K, d]``.

    Args:
      model: a ``tfmeta.models.LEOModel`` (networks, alpha and eta).
      outer_optimizer: Keras optimizer for the meta-parameters (Adam).
      n_way: N, classes per task (labels in [0, N)).
      inner_steps: latent-space steps in meta-training (reference: 5).
      eval_inner_steps: latent steps at evaluation (default ``inner_steps``).
      task_weighting, task_execution: must be "uniform" and "loop".
      jit_compile: compile the meta-steps with XLA. Dropout masks and samples
        are then drawn by XLA's generator: as deterministic, not the same numbers.
      seed: with the step and the task index, seeds dropout and sampling.
      **settings: the fields of ``LEOSettings``.
    """

    name = "leo"
    task_weightings = ("uniform",)
    task_executions = ("loop",)
    distributable = False
    extra_metrics = ("kl", "encoder_penalty")

    def __init__(
        self,
        model: LEOModel,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        n_way: int,
        inner_steps: int = 5,
        eval_inner_steps: int | None = None,
        task_weighting: str = "uniform",
        task_execution: str = "loop",
        jit_compile: bool = False,
        seed: int = 0,
        **settings,
    ):
        if not isinstance(model, LEOModel):
            raise TypeError(
                f"LEO needs a tfmeta.models.LEOModel, got {type(model).__name__}"
            )
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"LEO got unknown settings {unknown}; see LEOSettings")
        self.settings = LEO.check_arguments(
            n_way=n_way,
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            **settings,
        )
        self.n_way = n_way
        for field in dataclasses.fields(LEOSettings):
            setattr(self, field.name, getattr(self.settings, field.name))
        super().__init__(
            model,
            outer_optimizer,
            problem="classification",
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            task_weighting=task_weighting,
            task_execution=task_execution,
            jit_compile=jit_compile,
            seed=seed,
        )

    @staticmethod
    def check_arguments(
        *, n_way: int, inner_steps: int, eval_inner_steps: int | None, **arguments
    ) -> LEOSettings:
        """(``tfmeta.core.Learner.check_arguments``.) The settings, checked."""
        if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 2:
            raise ValueError(f"n_way must be an integer >= 2, got {n_way!r}")
        settings = LEOSettings(**{k: v for k, v in arguments.items() if k in SETTINGS})
        for name, steps in (
            ("inner_steps", inner_steps),
            ("eval_inner_steps", eval_inner_steps),
        ):
            if steps is not None:
                check_unrolled(steps, settings.finetune_steps, name)
        return settings

    # --------------------------------------------------------------- pieces
    def _dropout(self, x: tf.Tensor, seed: tf.Tensor, training: bool) -> tf.Tensor:
        return leo_losses.dropout(x, self.dropout_rate if training else 0.0, seed)

    def _sample(self, mean, stddev, seed, training: bool) -> tf.Tensor:
        return leo_losses.sample(
            mean, stddev, seed, training and not self.deterministic
        )

    def kl(self, samples, mean, stddev) -> tf.Tensor:
        """KL(q(z | D^tr) || N(0, I)) per latent entry, by ``kl_estimator``."""
        return leo_losses.kl(self.kl_estimator, samples, mean, stddev)

    def inner_loss(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """L^tr (``leo_losses.inner_loss``)."""
        return leo_losses.inner_loss(logits, labels, self.n_way)

    def regularization(self, params: LEOParameters) -> tf.Tensor:
        """lambda_1 * sum ||phi||^2 / 2 + lambda_2 * mean((C_d - I)^2)."""
        return leo_losses.regularization(
            self.model,
            params,
            self.l2_penalty_weight,
            self.orthogonality_penalty_weight,
        )

    # ------------------------------------------------------------ inner loop
    def leo_adapt(
        self,
        params: LEOParameters,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        inner_steps: int,
        finetune_steps: int,
        training: bool,
        task_seed: tf.Tensor | None = None,
    ) -> leo_inner_loop.Adapted:
        """w' ``[N, d]`` from ``support_x [N*K, d]``, ``support_y [N*K]``
        (``leo_inner_loop.adapt``). ``training``: dropout, sampling, the KL and
        encoder penalty terms."""
        if task_seed is None:
            task_seed = tf.constant([self.seed, 0], tf.int64)
        return leo_inner_loop.adapt(
            self,
            params,
            support_x,
            support_y,
            inner_steps,
            finetune_steps,
            training,
            task_seed,
        )

    # ------------------------------------------------------ public interface
    def adapt(
        self, support_x: tf.Tensor, support_y: tf.Tensor, inner_steps: int | None = None
    ) -> tf.Tensor:
        """w' ``[N, d]`` after ``eval_inner_steps`` (or ``inner_steps``) latent
        steps and ``finetune_steps`` on w; deterministic, variables unchanged."""
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        return self.leo_adapt(
            self.model.split_parameters(self.parameters()),
            support_x,
            support_y,
            steps,
            self.finetune_steps,
            training=False,
        ).weights

    def predict(self, fast_weights, query_x, support_x=None) -> tf.Tensor:
        """Logits ``x w^T`` ``[M, N]`` of ``query_x [M, d]`` under w ``[N, d]``."""
        del support_x  # no normalization statistics: the classifier is linear
        return tf.matmul(query_x, fast_weights, transpose_b=True)

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        """The meta-gradient of L^val + beta KL + gamma penalty (the L2 and
        orthogonality terms are added once per step, ``outer_gradient``)."""
        params = self.parameters()
        adapt_seed, query_seed = tf.unstack(
            tf.random.experimental.stateless_split(task_seed, 2)
        )
        with tf.GradientTape() as tape:
            tape.watch(params)
            adapted = self.leo_adapt(
                self.model.split_parameters(params),
                support_x,
                support_y,
                self.inner_steps,
                self.finetune_steps,
                training=True,
                task_seed=adapt_seed,
            )
            logits = self.predict(
                adapted.weights, self._dropout(query_x, query_seed, True)
            )
            query_loss = self.loss(logits, query_y)
            objective = (
                query_loss
                + self.kl_weight * adapted.kl
                + self.encoder_penalty_weight * adapted.encoder_penalty
            )
        meta_gradient = tape.gradient(
            objective, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return TaskResult(
            meta_gradient,
            query_loss,
            self.metric(logits, query_y),
            None,
            {"kl": adapted.kl, "encoder_penalty": adapted.encoder_penalty},
        )

    def query_outputs(self, support_x, support_y, query_x, steps: int):
        return self.predict(self.adapt(support_x, support_y, steps), query_x)

    def clip(self, gradients: list[tf.Tensor]) -> list[tf.Tensor]:
        """By value, then each variable's gradient by its norm (reference ``runner.py``)."""
        return leo_losses.clip(
            gradients, self.gradient_clip_value, self.gradient_clip_variable_norm
        )

    def outer_gradient(self, meta_gradient, outputs):
        """The tasks' mean plus the gradient of the L2 and orthogonality
        terms; clipped for the update (the norm reported is before clipping)."""
        params = self.parameters()
        with tf.GradientTape() as tape:
            tape.watch(params)
            regularization = self.regularization(self.model.split_parameters(params))
        regularization_gradient = tape.gradient(
            regularization, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        meta_gradient = [g + r for g, r in zip(meta_gradient, regularization_gradient)]
        outputs["regularization"] = regularization
        outputs["objective"] = (
            outputs["loss"]
            + self.kl_weight * outputs["kl"]
            + self.encoder_penalty_weight * outputs["encoder_penalty"]
            + regularization
        )
        return meta_gradient, self.clip(meta_gradient)

    def serving_functions(self, preprocessing=None) -> dict[str, Any]:
        from tfmeta.export.leo_signatures import leo_signatures

        return leo_signatures(self, preprocessing)

    def describe(self) -> dict[str, Any]:
        from tfmeta.export.leo_signatures import describe_leo

        return {**super().describe(), **describe_leo(self)}


def check_config(config: Config) -> None:
    """The LEO model's keys, and the unrolled loops of the reported steps."""
    LEOModel.check_arguments(**{key: config[key] for key in MODEL_KEYS})
    for steps in config.get("report_inner_steps", ()):
        check_unrolled(int(steps), config["finetune_steps"], "report_inner_steps")


def check_unrolled(steps: int, finetune_steps: int, name: str) -> None:
    """LEO's loops are unrolled in Python: ``steps`` latent and
    ``finetune_steps`` fine-tuning steps, each a copy in the graph."""
    what = f"{name}={steps} with finetune_steps={finetune_steps}"
    check_unrolled_steps(what, steps + finetune_steps)


# Defaults: google-deepmind/leo config.py (in LEOSettings and the LEO model's
# factory: alpha's and eta's initial values, the latent size); see
# tfmeta/configs/leo_*.py.
MODEL_KEYS = keyword_defaults(leo_model, exclude=("embedding_dim", "seed"))
ALGORITHM = Algorithm(
    name="leo",
    learner=LEO,
    parameters=(LEO, LEOSettings),
    model="leo",
    model_keys=MODEL_KEYS,
    check=check_config,
    summary="LEO, latent embedding optimization (Rusu et al. 2019)",
)
