"""ResNet-12, the deeper backbone of few-shot classification (Oreshkin et al.
2018, TADAM; Lee et al. 2019, MetaOptNet): four residual blocks, each three
3x3 convolutions with batch norm and leaky ReLU (slope 0.1) on the main path,
a 1x1 convolution with batch norm on the shortcut, their sum through a leaky
ReLU, then 2x2 max pooling ('same': 28 -> 14 -> 7 -> 4 -> 2); the last map is
averaged over space and a dense head gives the logits.

Widths are ``filters`` times (1, 2.5, 5, 10): 64 gives the papers' (64, 160,
320, 640). Convolutions have no bias (batch norm's offset takes its place),
and batch norm is ``MetaBatchNorm`` (exact second derivatives, the batch's
or the support set's statistics), so every learner adapts it as it adapts
``conv4``. Where we differ from the papers: no DropBlock and no running
statistics (the learners normalize with a task's own statistics).
"""

from __future__ import annotations

import keras

from tfmeta.models.batch_norm import MetaBatchNorm

WIDTH_FACTORS = (1.0, 2.5, 5.0, 10.0)
LEAKY_SLOPE = 0.1


def check_resnet12(filters: int) -> None:
    """Raises ValueError naming a setting ``resnet12`` cannot be built with."""
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise ValueError(f"filters must be an integer >= 1, got {filters!r}")


def resnet12_widths(filters: int) -> tuple[int, ...]:
    """The four blocks' channels for a first width of ``filters``."""
    check_resnet12(filters)
    return tuple(max(1, round(filters * factor)) for factor in WIDTH_FACTORS)


def resnet12(
    num_classes: int,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    filters: int = 64,
    seed: int | None = None,
    name: str = "resnet12",
    fused_batch_norm: bool = True,
) -> keras.Model:
    """ResNet-12 (see the module doc). Input ``[batch, H, W, C]``; output
    logits ``[batch, num_classes]``; the layer before the head is the
    embedding (``[batch, 10 * filters]``)."""
    widths = resnet12_widths(filters)
    count = [0]

    def initializer() -> keras.initializers.Initializer:
        count[0] += 1
        return keras.initializers.HeNormal(
            seed=None if seed is None else seed + count[0]
        )

    def conv(x, channels, size, label):
        return keras.layers.Conv2D(
            channels,
            size,
            padding="same",
            use_bias=False,
            kernel_initializer=initializer(),
            name=label,
        )(x)

    def norm(x, label):
        return MetaBatchNorm(fused=fused_batch_norm, name=label)(x)

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for block, channels in enumerate(widths):
        prefix = f"block{block}"
        shortcut = norm(
            conv(x, channels, 1, f"{prefix}_shortcut"), f"{prefix}_shortcut_norm"
        )
        for layer in range(3):
            x = conv(x, channels, 3, f"{prefix}_conv{layer}")
            x = norm(x, f"{prefix}_norm{layer}")
            if layer < 2:
                x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{prefix}_relu{layer}")(x)
        x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
        x = keras.layers.LeakyReLU(LEAKY_SLOPE, name=f"{prefix}_relu")(x)
        x = keras.layers.MaxPooling2D(2, padding="same", name=f"{prefix}_pool")(x)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    outputs = keras.layers.Dense(
        num_classes,
        kernel_initializer=keras.initializers.GlorotUniform(
            seed=None if seed is None else seed
        ),
        name="head",
    )(x)
    return keras.Model(inputs, outputs, name=name)
