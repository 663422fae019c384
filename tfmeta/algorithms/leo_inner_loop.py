"""LEO's adaptation (Rusu et al., ICLR 2019, Algorithm 1), with the networks
of ``tfmeta.models.leo``: encode the support set into class codes z, take
``inner_steps`` gradient steps on z through the decoder, decode w, then take
``finetune_steps`` steps on w. Unrolled in Python, so an enclosing tape
differentiates through every step (the meta-gradient is exact)."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from tfmeta.algorithms import leo_losses
from tfmeta.models.leo import LEOParameters


class Adapted(NamedTuple):
    weights: tf.Tensor  # w' [N, d]
    kl: tf.Tensor  # KL term (before beta)
    encoder_penalty: tf.Tensor  # ||stopgrad(z') - z||^2 (before gamma)


def adapt(
    learner,
    params: LEOParameters,
    support_x: tf.Tensor,
    support_y: tf.Tensor,
    inner_steps: int,
    finetune_steps: int,
    training: bool,
    task_seed: tf.Tensor,
) -> Adapted:
    """w' ``[N, d]`` from ``support_x [N*K, d]``, ``support_y [N*K]``.

    ``learner`` (a ``tfmeta.algorithms.LEO``) gives the model, N and the
    random draws and losses (``_dropout``, ``_sample``, ``kl``,
    ``inner_loss``, ``predict``); ``training``: dropout, sampling, the KL and
    encoder penalty terms; ``task_seed`` ``[2]`` seeds every draw.
    """
    leo_losses.check_support(support_x, learner.n_way)
    # One seed per random draw: encoder dropout, z, each decoded w (inner
    # steps + 1) and each support-loss dropout (inner + fine-tuning steps).
    draws = 2 + (inner_steps + 1) + inner_steps + finetune_steps
    seeds = iter(
        tf.unstack(tf.random.experimental.stateless_split(task_seed, draws))
        if training
        else [None] * draws
    )
    model = learner.model
    mean, stddev = model.latent_distribution(
        params,
        learner._dropout(support_x, next(seeds), training),
        support_y,
        learner.n_way,
    )
    latents = learner._sample(mean, stddev, next(seeds), training)
    sampled = training and not learner.deterministic
    kl = learner.kl(latents, mean, stddev) if sampled else tf.zeros([], mean.dtype)
    start = latents

    def decode(z):
        w_mean, w_stddev = model.weight_distribution(params, z)
        return learner._sample(w_mean, w_stddev, next(seeds), training)

    def support_loss(w):
        x = learner._dropout(support_x, next(seeds), training)
        return learner.inner_loss(learner.predict(w, x), support_y)

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
    return Adapted(weights, kl, penalty)
