"""LEO's objective (Rusu et al., ICLR 2019): its hyperparameters
(``LEOSettings``) and its stateless terms: the KL of the latent codes against
N(0, I), one-sample or closed form, the support loss, the L2 and decoder
orthogonality penalties, sampling, dropout and the reference code's
gradient clipping; ``tfmeta.algorithms.leo`` says where each enters.

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
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from tfmeta.checks import check_finite

KL_ESTIMATORS = ("sample", "analytic")


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


def kl(estimator: str, samples: tf.Tensor, mean: tf.Tensor, stddev: tf.Tensor):
    """KL(q(z | D^tr) || N(0, I)) per latent entry: "analytic" or "sample"."""
    if estimator == "analytic":
        return kl_analytic(mean, stddev)
    return kl_one_sample(samples, mean, stddev)


def inner_loss(logits: tf.Tensor, labels: tf.Tensor, n_way: int) -> tf.Tensor:
    """L^tr: the sum over classes of each class's mean support cross-entropy.

    With K examples of every class this is the sum of the ``[N*K]``
    cross-entropies divided by K; a served support set may hold different
    numbers of examples per class.
    """
    labels = tf.cast(labels, tf.int32)
    losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    counts = tf.reduce_sum(tf.one_hot(labels, n_way, dtype=losses.dtype), 0)
    return tf.reduce_sum(losses / tf.gather(counts, labels))


def dropout(x: tf.Tensor, rate: float, seed: tf.Tensor | None) -> tf.Tensor:
    """Stateless dropout at ``rate`` (0: ``x`` itself)."""
    if rate == 0.0:
        return x
    return tf.nn.experimental.stateless_dropout(x, rate, seed=seed)


def sample(mean, stddev, seed, stochastic: bool) -> tf.Tensor:
    """mean + stddev * epsilon (reparameterized), or the mean."""
    if not stochastic:
        return mean
    noise = tf.random.stateless_normal(tf.shape(mean), seed=seed, dtype=mean.dtype)
    return mean + stddev * noise


def clip(gradients, value: float | None, variable_norm: float | None):
    """Every entry to [-value, value], then each variable's gradient to
    ``variable_norm`` (None or 0: off)."""
    if value:
        gradients = [tf.clip_by_value(g, -value, value) for g in gradients]
    if variable_norm:
        gradients = [tf.clip_by_norm(g, variable_norm) for g in gradients]
    return gradients


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


def check_support(support_x: tf.Tensor, n_way: int) -> None:
    """A static support size must be a multiple of N (a dynamic one, as in a
    served request, is checked by the serving signature)."""
    count = support_x.shape[0]
    if count is not None and (count == 0 or count % n_way):
        raise ValueError(
            f"the support set must hold n_way * k_shot = {n_way} * K examples, "
            f"got {count}"
        )


def regularization(model, params, l2_weight: float, orthogonality_weight: float):
    """lambda_1 * sum ||phi||^2 / 2 over the networks' kernels + lambda_2 *
    mean((C_d - I)^2) of the decoder kernel."""
    l2 = tf.add_n([tf.nn.l2_loss(w) for w in model.network_weights(params)])
    orthogonality = orthogonality_penalty(model.decoder_kernel(params))
    return l2_weight * l2 + orthogonality_weight * orthogonality
