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
paper's text:
  - the KL term is the one-sample estimate log q(z) - log p(z) at the drawn z
    (``kl_estimator="sample"``; "analytic" is the closed form for diagonal
    Gaussians), averaged over the N*h latent entries, not summed;
  - the encoder penalty is the mean, not the sum, of the squared entries;
  - L2 is lambda_1 * sum_w ||w||^2 / 2 (``tf.nn.l2_loss``) over every kernel;
    the orthogonality penalty lambda_2 * mean((C_d - I)^2) with C_d the
    correlation matrix of the rows of the decoder kernel ``[h, 2d]``;
  - standard deviations are parameterized as max(exp(u) - 1 + offset, 1e-10)
    (see ``tfmeta.models.leo``), and classifier weights are also sampled
    during meta-training;
  - dropout (rate ``dropout_rate``) on the input embeddings at the encoder and
    at every classifier evaluation, support and query, during meta-training;
  - the inner losses L^tr are the per-example cross-entropies summed and
    divided by K (the sum over classes of each class's mean). The reference
    keeps K tiled copies of every class code and averages the logits over
    them, so each copy receives 1/K of the gradient of the summed loss; with
    one code per class this is the same step. The paper writes the plain sum.
  - alpha ``[h]`` and eta ``[d]`` are per-dimension vectors;
  - the meta-gradient is clipped by value, then every variable's gradient by
    its own norm (``gradient_clip_value``, ``gradient_clip_variable_norm``), then
    applied by the outer optimizer (Adam in the reference).
Where we follow the paper: one code z_n (and one weight vector w_n) is drawn
per class; the reference draws K of each, one per support example of the
class. The reference also replaces a NaN meta-gradient by weight decay; here a
non-finite loss stops training (``tfmeta.training.Trainer``) and the last good
checkpoint is kept.

Task weighting: only "uniform". Gradient Agreement compares update vectors
theta - theta'_i, and LEO's adapted parameters (w') do not live in the space
of its meta-parameters.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import keras
import tensorflow as tf

from tfmeta.algorithms.base import MetaLearner
from tfmeta.models.leo import LEOModel, LEOParameters

KL_ESTIMATORS = ("sample", "analytic")


# ------------------------------------------------------------------ losses
def gaussian_log_density(x: tf.Tensor, mean: tf.Tensor, stddev: tf.Tensor) -> tf.Tensor:
    """log N(x; mean, stddev^2), elementwise."""
    return (
        -0.5 * tf.square((x - mean) / stddev)
        - tf.math.log(stddev)
        - 0.5 * math.log(2.0 * math.pi)
    )


def kl_one_sample(samples: tf.Tensor, mean: tf.Tensor, stddev: tf.Tensor) -> tf.Tensor:
    """Mean over entries of log q(z) - log p(z) at z = ``samples``, q = N(mean,
    stddev^2), p = N(0, 1): an unbiased one-sample estimate of the KL per entry."""
    prior = gaussian_log_density(samples, tf.zeros_like(mean), tf.ones_like(stddev))
    return tf.reduce_mean(gaussian_log_density(samples, mean, stddev) - prior)


def kl_analytic(mean: tf.Tensor, stddev: tf.Tensor) -> tf.Tensor:
    """Mean over entries of KL(N(mean, stddev^2) || N(0, 1))
    = -log sigma + (sigma^2 + mu^2) / 2 - 1/2."""
    return tf.reduce_mean(
        -tf.math.log(stddev) + 0.5 * (tf.square(stddev) + tf.square(mean)) - 0.5
    )


def orthogonality_penalty(weight: tf.Tensor) -> tf.Tensor:
    """mean((C - I)^2), C_ij the cosine between rows i and j of ``weight`` ``[rows, cols]``."""
    norms = tf.norm(weight, axis=1, keepdims=True) + 1e-32
    correlation = tf.matmul(weight, weight, transpose_b=True) / tf.matmul(
        norms, norms, transpose_b=True
    )
    identity = tf.eye(weight.shape[0], dtype=weight.dtype)
    return tf.reduce_mean(tf.square(correlation - identity))


class LEOTaskResult(NamedTuple):
    """Per-task outcome of a LEO meta-train step (gradients align with the model's variables)."""

    meta_gradient: list[tf.Tensor]  # d(L^val + beta KL + gamma penalty)/d(params)
    query_loss: tf.Tensor  # mean query cross-entropy after adaptation
    query_metric: tf.Tensor  # query accuracy
    kl: tf.Tensor  # KL term (before beta)
    encoder_penalty: tf.Tensor  # ||stopgrad(z') - z||^2 term (before gamma)


class _Adapted(NamedTuple):
    weights: tf.Tensor  # w' [N, d]
    kl: tf.Tensor
    encoder_penalty: tf.Tensor


class LEO(MetaLearner):
    """Latent Embedding Optimization over embedding vectors ``[N*K, d]``.

    Args:
      model: a ``tfmeta.models.LEOModel`` (networks, alpha and eta).
      outer_optimizer: Keras optimizer for the meta-parameters (Adam).
      n_way: N, classes per task (labels in [0, N)).
      inner_steps: latent-space steps in meta-training (reference: 5).
      finetune_steps: steps on w in meta-training and evaluation (reference: 5).
      eval_inner_steps: latent steps at evaluation (default ``inner_steps``).
      kl_weight: beta.  encoder_penalty_weight: gamma.
      l2_penalty_weight: lambda_1.  orthogonality_penalty_weight: lambda_2.
      dropout_rate: dropout on the input embeddings in meta-training.
      kl_estimator: "sample" (reference code) or "analytic" (closed form).
      deterministic: z = mu and w = mean of their distributions in
        meta-training too (no sampling, no KL term); evaluation is always
        deterministic.
      gradient_clip_value: clip every meta-gradient entry to [-v, v] (None: off).
      gradient_clip_variable_norm: then clip each variable's gradient to this norm (None: off).
      task_weighting: must be "uniform".
      jit_compile: compile the meta-steps with XLA. Dropout masks and samples
        are then drawn by XLA's generator: as deterministic, not the same numbers.
      seed: with the step and the task index, seeds dropout and sampling.
    """

    name = "leo"

    def __init__(
        self,
        model: LEOModel,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        n_way: int,
        inner_steps: int = 5,
        finetune_steps: int = 5,
        eval_inner_steps: int | None = None,
        kl_weight: float = 1e-3,
        encoder_penalty_weight: float = 1e-9,
        l2_penalty_weight: float = 1e-8,
        orthogonality_penalty_weight: float = 1e-3,
        dropout_rate: float = 0.5,
        kl_estimator: str = "sample",
        deterministic: bool = False,
        gradient_clip_value: float | None = 0.1,
        gradient_clip_variable_norm: float | None = 0.1,
        task_weighting: str = "uniform",
        jit_compile: bool = False,
        seed: int = 0,
    ):
        if not isinstance(model, LEOModel):
            raise TypeError(
                f"LEO needs a tfmeta.models.LEOModel, got {type(model).__name__}"
            )
        if task_weighting != "uniform":
            raise ValueError(
                f"LEO supports only task_weighting='uniform', got {task_weighting!r}: "
                "Gradient Agreement weighs update vectors theta - theta'_i, and LEO's "
                "adapted classifier weights are not in the space of its meta-parameters"
            )
        if kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {KL_ESTIMATORS}, got {kl_estimator!r}"
            )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")
        if isinstance(n_way, bool) or not isinstance(n_way, int) or n_way < 2:
            raise ValueError(f"n_way must be an integer >= 2, got {n_way!r}")
        if finetune_steps < 0:
            raise ValueError(f"finetune_steps must be >= 0, got {finetune_steps}")
        self.n_way = n_way
        self.finetune_steps = finetune_steps
        self.kl_weight = kl_weight
        self.encoder_penalty_weight = encoder_penalty_weight
        self.l2_penalty_weight = l2_penalty_weight
        self.orthogonality_penalty_weight = orthogonality_penalty_weight
        self.dropout_rate = dropout_rate
        self.kl_estimator = kl_estimator
        self.deterministic = deterministic
        self.gradient_clip_value = gradient_clip_value
        self.gradient_clip_variable_norm = gradient_clip_variable_norm
        super().__init__(
            model,
            outer_optimizer,
            inner_lr=model.inner_lr_init,
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            problem="classification",
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
        if not training or self.dropout_rate == 0.0:
            return x
        return tf.nn.experimental.stateless_dropout(x, self.dropout_rate, seed=seed)

    def _sample(self, mean, stddev, seed, training: bool) -> tf.Tensor:
        if not training or self.deterministic:
            return mean
        noise = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=mean.dtype)
        return mean + stddev * noise

    def kl(self, samples, mean, stddev) -> tf.Tensor:
        """KL(q(z | D^tr) || N(0, I)) per latent entry, by ``kl_estimator``."""
        if self.kl_estimator == "analytic":
            return kl_analytic(mean, stddev)
        return kl_one_sample(samples, mean, stddev)

    def inner_loss(self, logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """L^tr: the sum over classes of each class's mean support cross-entropy.

        With K examples of every class this is the sum of the ``[N*K]``
        cross-entropies divided by K; a served support set may hold different
        numbers of examples per class.
        """
        labels = tf.cast(labels, tf.int32)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        counts = tf.reduce_sum(tf.one_hot(labels, self.n_way, dtype=losses.dtype), 0)
        return tf.reduce_sum(losses / tf.gather(counts, labels))

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

    def inner_loop(
        self,
        params,
        support_x,
        support_y,
        steps: int,
        differentiable: bool = True,
        task_seed: tf.Tensor | None = None,
        training: bool = True,
    ) -> tf.Tensor:
        """``MetaLearner.inner_loop`` for LEO: w' ``[N, d]`` after ``steps`` latent
        steps and ``finetune_steps`` steps on w, from ``params`` aligned with the
        model's variables (always unrolled, so always differentiable)."""
        del differentiable
        return self.leo_adapt(
            self.model.split_parameters(params),
            support_x,
            support_y,
            steps,
            self.finetune_steps,
            training,
            task_seed,
        ).weights

    # ------------------------------------------------------ public interface
    def adapt(
        self, support_x: tf.Tensor, support_y: tf.Tensor, inner_steps: int | None = None
    ) -> tf.Tensor:
        """w' ``[N, d]`` for one task (deterministic, no dropout); variables unchanged.

        Runs ``eval_inner_steps`` (or ``inner_steps``) latent steps, then
        ``finetune_steps`` steps on w.
        """
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        return self.inner_loop(
            self.parameters(), support_x, support_y, steps, training=False
        )

    def predict(
        self,
        fast_weights: tf.Tensor,
        query_x: tf.Tensor,
        support_x: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Logits ``x w^T`` ``[M, N]`` of ``query_x [M, d]`` under w ``[N, d]``."""
        del support_x  # no normalization statistics: the classifier is linear
        return tf.matmul(query_x, fast_weights, transpose_b=True)

    def _task_terms(self, support_x, support_y, query_x, query_y, task_seed):
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
        return LEOTaskResult(
            meta_gradient,
            query_loss,
            self.metric(logits, query_y),
            adapted.kl,
            adapted.encoder_penalty,
        ), adapted.weights

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        """(meta_gradient, query_loss, query_accuracy, w') for one task; the
        meta-gradient is that of L^val + beta KL + gamma penalty (no L2/orthogonality)."""
        result, weights = self._task_terms(
            support_x, support_y, query_x, query_y, task_seed
        )
        return result.meta_gradient, result.query_loss, result.query_metric, weights

    def _task_result_with_update(
        self, support_x, support_y, query_x, query_y, task_seed
    ) -> LEOTaskResult:
        return self._task_terms(support_x, support_y, query_x, query_y, task_seed)[0]

    def clip(self, gradients: list[tf.Tensor]) -> list[tf.Tensor]:
        """By value, then each variable's gradient by its norm (reference ``runner.py``)."""
        if self.gradient_clip_value:
            v = self.gradient_clip_value
            gradients = [tf.clip_by_value(g, -v, v) for g in gradients]
        if self.gradient_clip_variable_norm:
            gradients = [
                tf.clip_by_norm(g, self.gradient_clip_variable_norm) for g in gradients
            ]
        return gradients

    def _train_step(self, episode) -> dict[str, tf.Tensor]:
        results = self._run_tasks(episode)
        tasks = len(results)
        params = self.parameters()
        with tf.GradientTape() as tape:
            tape.watch(params)
            regularization = self.regularization(self.model.split_parameters(params))
        regularization_gradient = tape.gradient(
            regularization, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        meta_gradient = [
            tf.add_n([r.meta_gradient[k] for r in results]) / tasks
            + regularization_gradient[k]
            for k in range(len(params))
        ]
        norm = tf.linalg.global_norm(meta_gradient)
        self.outer_optimizer.apply_gradients(
            zip(self.clip(meta_gradient), self.variables)
        )

        def mean(values):
            return tf.reduce_mean(tf.stack(values))

        query_loss = mean([r.query_loss for r in results])
        kl = mean([r.kl for r in results])
        penalty = mean([r.encoder_penalty for r in results])
        return {
            "loss": query_loss,
            "accuracy": mean([r.query_metric for r in results]),
            "kl": kl,
            "encoder_penalty": penalty,
            "regularization": regularization,
            "objective": query_loss
            + self.kl_weight * kl
            + self.encoder_penalty_weight * penalty
            + regularization,
            "task_weights": tf.fill([tasks], tf.constant(1.0 / tasks, kl.dtype)),
            "meta_gradient_norm": norm,
        }

    def _eval_task(self, support_x, support_y, query_x, query_y, steps: int):
        weights = self.inner_loop(
            self.parameters(), support_x, support_y, steps, training=False
        )
        logits = self.predict(weights, query_x)
        return self.loss(logits, query_y), self.metric(logits, query_y)
