"""The outer (meta) optimizer: Adam, SGD, SGD with a linearly annealed
rate (Reptile's epsilon schedule), Adam with a cosine-annealed rate
(MAML++), or Adam whose rate drops by a factor every so many steps
(Prototypical Networks: halved every 2000 episodes). beta in the MAML paper
is its rate."""

from __future__ import annotations

import keras

from tfmeta.checks import check_finite

OUTER_OPTIMIZERS = ("adam", "sgd", "annealed_sgd", "cosine_adam", "step_adam")
ANNEALED = ("annealed_sgd", "cosine_adam")  # rates that reach final_outer_lr


def annealed_outer_optimizer(
    meta_step_size: float, num_steps: int, final_step_size: float = 0.0
) -> keras.optimizers.Optimizer:
    """SGD whose learning rate epsilon falls linearly from ``meta_step_size`` at
    step 0 to ``final_step_size`` at ``num_steps`` (the Reptile paper: 1 -> 0)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    schedule = keras.optimizers.schedules.PolynomialDecay(
        meta_step_size,
        decay_steps=num_steps,
        end_learning_rate=final_step_size,
        power=1.0,
    )
    return keras.optimizers.SGD(learning_rate=schedule)


def cosine_outer_optimizer(
    learning_rate: float,
    num_steps: int,
    final_lr: float = 0.0,
    clip_norm: float | None = None,
) -> keras.optimizers.Optimizer:
    """Adam whose rate beta follows half a cosine from ``learning_rate`` at
    step 0 to ``final_lr`` at ``num_steps`` (MAML++, Antoniou et al. 2019:
    ``CosineAnnealingLR`` with eta_min, stepped per epoch in the authors'
    code, per meta-step here)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=num_steps, alpha=final_lr / learning_rate
    )
    return keras.optimizers.Adam(schedule, global_clipnorm=clip_norm)


def step_outer_optimizer(
    learning_rate: float,
    decay_steps: int,
    decay_rate: float = 0.5,
    clip_norm: float | None = None,
) -> keras.optimizers.Optimizer:
    """Adam whose rate is ``learning_rate * decay_rate ** floor(step /
    decay_steps)`` (Snell et al. 2017: halved every 2000 episodes)."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=decay_steps, decay_rate=decay_rate, staircase=True
    )
    return keras.optimizers.Adam(schedule, global_clipnorm=clip_norm)


def check_outer_optimizer(
    name: str,
    learning_rate: float,
    clip_norm: float | None,
    final_lr: float = 0.0,
    decay_steps: int = 1,
    decay_rate: float = 0.5,
) -> None:
    if name not in OUTER_OPTIMIZERS:
        raise ValueError(
            f"outer_optimizer must be one of {OUTER_OPTIMIZERS}, got {name!r}"
        )
    check_finite("outer_lr", learning_rate, positive=True)
    check_finite("final_outer_lr", final_lr)
    if clip_norm is not None:
        check_finite("gradient_clip_norm", clip_norm, positive=True)
    if name == "step_adam":
        if (
            isinstance(decay_steps, bool)
            or not isinstance(decay_steps, int)
            or decay_steps < 1
        ):
            raise ValueError(
                f"outer_lr_decay_steps must be an integer >= 1, got {decay_steps!r}"
            )
        check_finite("outer_lr_decay_rate", decay_rate, positive=True)


def make_outer_optimizer(
    name: str,
    learning_rate: float,
    *,
    clip_norm: float | None = None,
    schedule_steps: int = 1,
    final_lr: float = 0.0,
    decay_steps: int = 2000,
    decay_rate: float = 0.5,
) -> keras.optimizers.Optimizer:
    """``name`` in ``OUTER_OPTIMIZERS``; ``schedule_steps``: the length of the
    annealed schedule (fixed when a run starts); ``decay_steps`` and
    ``decay_rate``: step_adam's drops."""
    check_outer_optimizer(
        name, learning_rate, clip_norm, final_lr, decay_steps, decay_rate
    )
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, global_clipnorm=clip_norm)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, global_clipnorm=clip_norm)
    if name == "cosine_adam":
        return cosine_outer_optimizer(
            learning_rate, schedule_steps, final_lr, clip_norm
        )
    if name == "step_adam":
        return step_outer_optimizer(learning_rate, decay_steps, decay_rate, clip_norm)
    return annealed_outer_optimizer(learning_rate, schedule_steps, final_lr)
