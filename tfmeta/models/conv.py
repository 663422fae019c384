"""The convolutional network of the MAML paper (Finn et al. 2017, section 5.2)."""

from __future__ import annotations

import keras

from tfmeta.models.batch_norm import MetaBatchNorm

POOLINGS = ("stride", "max")


def _glorot(seed: int | None, offset: int) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(
        seed=None if seed is None else seed + offset
    )


def check_conv4(filters: int, depth: int, pooling: str) -> None:
    """Raises ValueError naming a setting ``conv4`` cannot be built with."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if depth < 1 or filters < 1:
        raise ValueError(
            f"depth and filters must be >= 1, got depth={depth}, filters={filters}"
        )


def check_mlp(hidden: tuple[int, ...]) -> None:
    """Raises ValueError unless every hidden size is >= 1."""
    if any(units < 1 for units in hidden):
        raise ValueError(f"hidden sizes must be >= 1, got {list(hidden)}")


def conv4(
    num_classes: int,
    input_shape: tuple[int, int, int] = (28, 28, 1),
    filters: int = 64,
    depth: int = 4,
    pooling: str = "stride",
    batch_norm: bool = True,
    seed: int | None = None,
    name: str = "conv4",
    fused_batch_norm: bool = True,
) -> keras.Sequential:
    """``depth`` blocks of 3x3 conv (``filters`` channels), batch norm, ReLU.

    pooling="stride": each convolution has stride 2 and the last feature map is
    averaged over space, as the MAML code does for Omniglot (28 -> 14 -> 7 -> 4
    -> 2 -> mean). pooling="max": stride 1 and 2x2 max-pooling ('same', i.e.
    ceil) after each block, then flatten, as for miniImageNet and the PyTorch
    reference (28 -> 14 -> 7 -> 4 -> 2, 2*2*filters features).

    Input ``[batch, H, W, C]``; output logits ``[batch, num_classes]``.
    Batch norm is ``MetaBatchNorm`` (exact second derivatives, batch statistics;
    ``fused_batch_norm=False`` keeps it off TensorFlow's fused kernel).
    """
    check_conv4(filters, depth, pooling)
    layers: list[keras.layers.Layer] = [keras.Input(shape=input_shape)]
    for block in range(depth):
        strides = 2 if pooling == "stride" else 1
        layers.append(
            keras.layers.Conv2D(
                filters,
                3,
                strides=strides,
                padding="same",
                kernel_initializer=_glorot(seed, block),
                name=f"conv{block}",
            )
        )
        if batch_norm:
            layers.append(MetaBatchNorm(fused=fused_batch_norm, name=f"norm{block}"))
        layers.append(keras.layers.ReLU(name=f"relu{block}"))
        if pooling == "max":
            layers.append(
                keras.layers.MaxPooling2D(2, padding="same", name=f"pool{block}")
            )
    layers.append(
        keras.layers.GlobalAveragePooling2D(name="mean")
        if pooling == "stride"
        else keras.layers.Flatten()
    )
    layers.append(
        keras.layers.Dense(
            num_classes, kernel_initializer=_glorot(seed, depth), name="head"
        )
    )
    return keras.Sequential(layers, name=name)


def mlp(
    output_dim: int = 1,
    input_dim: int = 1,
    hidden: tuple[int, ...] = (40, 40),
    seed: int | None = None,
    name: str = "mlp",
) -> keras.Sequential:
    """The sinusoid regressor of the MAML paper: ``hidden`` ReLU layers (2x40).

    Input ``[batch, input_dim]``; output ``[batch, output_dim]``.
    """
    check_mlp(hidden)
    layers: list[keras.layers.Layer] = [keras.Input(shape=(input_dim,))]
    for i, units in enumerate(hidden):
        layers.append(
            keras.layers.Dense(
                units,
                activation="relu",
                kernel_initializer=_glorot(seed, i),
                name=f"hidden{i}",
            )
        )
    layers.append(
        keras.layers.Dense(
            output_dim, kernel_initializer=_glorot(seed, len(hidden)), name="head"
        )
    )
    return keras.Sequential(layers, name=name)
