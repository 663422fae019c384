"""LEO: Latent Embedding Optimization (Rusu et al., ICLR 2019).

For a task with support set D^tr (N classes, K embeddings x in R^d each) and
query set D^val, with the networks of ``tfmeta.models.leo``:

  1. encode: (mu_n, sigma_n) from the relation network over the support codes;
     z_n = mu_n + sigma_n * epsilon (reparameterized; z_n = mu_n when
     deterministic or at evaluation).
  2. latent inner loop, ``inner_steps`` times:
         z' <- z' - alpha * grad_z' L^tr(w(z')),   w(z') sampled from g_phi_d(z')
  3. fine-tuning, ``finetune_steps`` times:  w' <- w' - eta * grad_w' L^tr(w')
  4. outer objective (minimized over phi_e, phi_r, phi_d, alpha, eta):
         L^val(w') + beta KL(q(z | D^tr) || N(0, I)) + gamma ||stopgrad(z') - z||^2
         + lambda_1 ||phi||^2 + lambda_2 ||C_d - I||^2
     The meta-gradient is exact (second order): the inner steps are unrolled
     under the outer tape.

The classifier is softmax(w . x): logits ``x w^T`` ``[M, N]``, no bias.

Where we follow the reference code (google-deepmind/leo) rather than the
paper's text, term by term (the KL estimate and its mean over entries, the
mean encoder penalty, L2 and orthogonality, the standard deviations, dropout,
L^tr divided by K, per-dimension alpha and eta, the clipping), and where we
follow the paper (one code per class): ``tfmeta.algorithms.leo_losses``.

Capabilities: only "uniform" task weighting (Gradient Agreement compares
update vectors theta - theta'_i, and LEO's adapted parameters w' do not live
in the space of its meta-parameters), tasks run in a loop, on one device.

  python -m experiments.train --algorithm=leo --dataset=embeddings --data_dir=<root> --workdir=/tmp/leo
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import keras
import tensorflow as tf

from tfmeta.algorithms import leo_losses
from tfmeta.algorithms.leo_losses import KL_ESTIMATORS, orthogonality_penalty
from tfmeta.core.algorithm import Algorithm, Config, check_finite
from tfmeta.core.executor import TaskResult
from tfmeta.core.learner import Learner, check_inner_steps
from tfmeta.models.leo import LEOModel, LEOParameters


class _Adapted(NamedTuple):
    weights: tf.Tensor  # w' [N, d]
    kl: tf.Tensor
    encoder_penalty: tf.Tensor


@dataclasses.dataclass(frozen=True)
class LEOSettings:
    """LEO's hyperparameters; defaults from the reference code's config.py."""

    finetune_steps: int = 5  # steps on w in meta-training and evaluation
    kl_weight: float = 1e-3  # beta
    encoder_penalty_weight: float = 1e-9  # gamma
    l2_penalty_weight: float = 1e-8  # lambda_1
    orthogonality_penalty_weight: float = 1e-3  # lambda_2
    dropout_rate: float = 0.5  # on the input embeddings in meta-training
    kl_estimator: str = "sample"  # reference code; "analytic": closed form
    # z and w are the means of their distributions in meta-training too (no
    # sampling, no KL); evaluation is always deterministic.
    deterministic: bool = False
    gradient_clip_value: float | None = 0.1  # each entry to [-v, v]; None: off
    gradient_clip_variable_norm: float | None = 0.1  # then each variable's norm

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}"
            )
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.finetune_steps < 0:
            raise ValueError(f"finetune_steps must be >= 0, got {self.finetune_steps}")
        for name in (
            "kl_weight",
            "encoder_penalty_weight",
            "l2_penalty_weight",
            "orthogonality_penalty_weight",
        ):
            check_finite(name, getattr(self, name))


class LEO(Learner):
    """Latent Embedding Optimization over embedding vectors ``[N*K, d]``.

    Args:
      model: a ``tfmeta.models.LEOModel`` (networks, alpha and eta).
      outer_optimizer: Keras optimizer for the meta-parameters (Adam).
      n_way: N, classes per task (labels in [0, N)).
      inner_steps: latent-space steps in meta-training (reference: 5).
      eval_inner_steps: latent steps at evaluation (default ``inner_steps``).
      task_weighting: must be "uniform".
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
        jit_compile: bool = False,
        seed: int = 0,
        **settings,
    ):
        if not isinstance(model, LEOModel):
            raise TypeError(
                f"LEO needs a tfmeta.models.LEOModel, got {type(model).__name__}"
            )
        if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 2:
            raise ValueError(f"n_way must be an integer >= 2, got {n_way!r}")
        self.n_way = n_way
        self.settings = LEOSettings(**settings)
        for field in dataclasses.fields(LEOSettings):
            setattr(self, field.name, getattr(self.settings, field.name))
        super().__init__(
            model,
            outer_optimizer,
            problem="classification",
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            task_weighting=task_weighting,
            jit_compile=jit_compile,
            seed=seed,
        )

    # --------------------------------------------------------------- pieces
    def _check_support(self, support_x: tf.Tensor) -> None:
        """A static support size must be a multiple of N (a dynamic one, as in a
        served request, is checked by the serving signature)."""
        count = support_x.shape[0]
        if count is not None and (count == 0 or count % self.n_way):
            raise ValueError(
                f"the support set must hold n_way * k_shot = {self.n_way} * K examples, "
                f"got {count}"
            )

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
        l2 = tf.add_n([tf.nn.l2_loss(w) for w in self.model.network_weights(params)])
        orthogonality = orthogonality_penalty(self.model.decoder_kernel(params))
        return (
            self.l2_penalty_weight * l2
            + self.orthogonality_penalty_weight * orthogonality
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
    ) -> _Adapted:
        """w' ``[N, d]`` from ``support_x [N*K, d]``, ``support_y [N*K]``.

        Unrolled in Python, so an enclosing tape differentiates through every
        step. ``training``: dropout, sampling, the KL and encoder penalty terms.
        """
        self._check_support(support_x)
        if task_seed is None:
            task_seed = tf.constant([self.seed, 0], tf.int64)
        # One seed per random draw: encoder dropout, z, each decoded w (inner
        # steps + 1) and each support-loss dropout (inner + fine-tuning steps).
        draws = 2 + (inner_steps + 1) + inner_steps + finetune_steps
        seeds = iter(
            tf.unstack(tf.random.experimental.stateless_split(task_seed, draws))
            if training
            else [None] * draws
        )
        model = self.model
        mean, stddev = model.latent_distribution(
            params,
            self._dropout(support_x, next(seeds), training),
            support_y,
            self.n_way,
        )
        latents = self._sample(mean, stddev, next(seeds), training)
        sampled = training and not self.deterministic
        kl = self.kl(latents, mean, stddev) if sampled else tf.zeros([], mean.dtype)
        start = latents

        def decode(z):
            w_mean, w_stddev = model.weight_distribution(params, z)
            return self._sample(w_mean, w_stddev, next(seeds), training)

        def support_loss(w):
            x = self._dropout(support_x, next(seeds), training)
            return self.inner_loss(self.predict(w, x), support_y)

        for _ in range(inner_steps):
            with tf.GradientTape() as tape:
                tape.watch(latents)
                loss = support_loss(decode(latents))
            latents = latents - params.inner_lr * tape.gradient(loss, latents)
        weights = decode(latents)
        for _ in range(finetune_steps):
            with tf.GradientTape() as tape:
                tape.watch(weights)
                loss = support_loss(weights)
            weights = weights - params.finetune_lr * tape.gradient(loss, weights)
        if training:
            penalty = tf.reduce_mean(tf.square(tf.stop_gradient(latents) - start))
        else:
            penalty = tf.zeros([], mean.dtype)
        return _Adapted(weights, kl, penalty)

    # ------------------------------------------------------ public interface
    def adapt(
        self, support_x: tf.Tensor, support_y: tf.Tensor, inner_steps: int | None = None
    ) -> tf.Tensor:
        """w' ``[N, d]`` for one task (deterministic, no dropout); variables unchanged.

        Runs ``eval_inner_steps`` (or ``inner_steps``) latent steps, then
        ``finetune_steps`` steps on w.
        """
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        return self.leo_adapt(
            self.model.split_parameters(self.parameters()),
            support_x,
            support_y,
            steps,
            self.finetune_steps,
            training=False,
        ).weights

    def predict(
        self,
        fast_weights: tf.Tensor,
        query_x: tf.Tensor,
        support_x: tf.Tensor | None = None,
    ) -> tf.Tensor:
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

    def eval_task(self, support_x, support_y, query_x, query_y, steps: int):
        logits = self.predict(self.adapt(support_x, support_y, steps), query_x)
        return self.loss(logits, query_y), self.metric(logits, query_y)

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


# Defaults: google-deepmind/leo config.py; see experiments/configs/leo_*.py.
SETTINGS = tuple(field.name for field in dataclasses.fields(LEOSettings))
DEFAULTS: dict[str, Any] = {
    **dataclasses.asdict(LEOSettings()),
    "inner_lr": 1.0,  # alpha's initial value
    "finetune_lr": 1e-3,  # eta's initial value
    "num_latents": 64,
    "inner_steps": 5,
    "eval_inner_steps": 5,
    "task_weighting": "uniform",
    "task_execution": "loop",
    "jit_compile": False,
    "gradient_clip_value": None,
    "gradient_clip_variable_norm": None,
}


def check(config: Config) -> None:
    LEOSettings(**{key: config[key] for key in SETTINGS})
    if int(config["n_way"]) < 2:
        raise ValueError(f"n_way must be >= 2, got {config['n_way']}")
    for name in ("inner_lr", "finetune_lr"):
        check_finite(name, config[name], positive=True)
    if not config["num_latents"] or int(config["num_latents"]) < 1:
        raise ValueError(f"num_latents must be >= 1, got {config['num_latents']}")
    check_inner_steps(int(config["inner_steps"]), int(config["eval_inner_steps"]))


def build(config: Config, model, outer_optimizer, problem: str) -> LEO:
    return LEO(
        model,
        outer_optimizer,
        n_way=int(config["n_way"]),
        inner_steps=int(config["inner_steps"]),
        eval_inner_steps=int(config["eval_inner_steps"]),
        task_weighting=config["task_weighting"],
        jit_compile=bool(config["jit_compile"]),
        seed=int(config["seed"]),
        **{key: config[key] for key in SETTINGS},
    )


ALGORITHM = Algorithm(
    name="leo",
    learner=LEO,
    defaults=DEFAULTS,
    check=check,
    build=build,
    model="leo",
    summary="LEO, latent embedding optimization (Rusu et al. 2019)",
)
