"""The convolutional network of the MAML paper (Finn et al. 2017, section 5.2)."""

from __future__ import annotations

import keras

from tfmeta.models import max_pool, pool_first
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


def hands_bias_to(conv, norm, inputs) -> bool:
    """Whether ``conv`` can run without its bias and hand it to ``norm``
    (``MetaBatchNorm``'s ``input_bias``): a channels-last convolution with a
    bias and no activation, computing in the weights' and the inputs' dtype,
    followed by a MetaBatchNorm."""
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return (
        isinstance(conv, keras.layers.Conv2D)
        and conv.use_bias
        and conv.activation is keras.activations.linear
        and conv.data_format == "channels_last"
        and conv.compute_dtype == conv.variable_dtype == dtype
        and type(norm) is MetaBatchNorm
    )


@keras.saving.register_keras_serializable(package="tfmeta")
class ConvNet(keras.Sequential):
    """A ``keras.Sequential`` stack run as the same function with less work:

    - each convolution followed by batch norm runs without its bias and
      hands it to the normalization (``MetaBatchNorm``'s ``input_bias``),
      where it cancels against the maps' own moments (``fold_bias``);
    - the first block, where it is a 3x3 conv, batch norm, ReLU and 2x2 max
      pooling over an input of few channels, runs as
      ``tfmeta.models.pool_first`` computes it, with the pooling before the
      normalization (``pool_first``);
    - with either setting on, each 2x2 stride-2 max pooling runs as
      ``tfmeta.models.max_pool`` computes it (the same figures and
      derivatives, a cheaper second derivative), before a plain ReLU that
      came before it (the same figures, a quarter of the ReLU's work).

    Its layers and weights are those of the plain stack; with both settings
    off it runs them one by one."""

    def __init__(
        self, *args, pool_first: bool = True, fold_bias: bool = True, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.pool_first = pool_first
        self.fold_bias = fold_bias

    def call(self, inputs, training=None, mask=None, **kwargs):
        layers = self.layers
        pooled = self.pool_first and pool_first.applies(layers, inputs)
        if not (pooled or self.fold_bias):
            return super().call(inputs, training=training, mask=mask, **kwargs)
        outputs, index = inputs, 0
        if pooled:
            outputs, index = pool_first.block(inputs, layers[0], layers[1]), 4
        while index < len(layers):
            layer = layers[index]
            following = layers[index + 1] if index + 1 < len(layers) else None
            if self.fold_bias and hands_bias_to(layer, following, outputs):
                convolved = layer.convolution_op(outputs, layer.kernel.value)
                outputs = following(convolved, input_bias=layer.bias.value)
                index += 2
            elif max_pool.commutes(layer) and max_pool.replaces(following):
                outputs, index = layer(max_pool.max_pool(outputs)), index + 2
            elif max_pool.replaces(layer):
                outputs, index = max_pool.max_pool(outputs), index + 1
            else:
                outputs = layer(outputs, training=training)
                index += 1
        return outputs

    def get_config(self):
        return {
            **super().get_config(),
            "pool_first": self.pool_first,
            "fold_bias": self.fold_bias,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        pool, fold = config.pop("pool_first", True), config.pop("fold_bias", True)
        model = super().from_config(config, custom_objects=custom_objects)
        model.pool_first, model.fold_bias = pool, fold
        return model


def up_to_head(model: keras.Model, name: str) -> keras.Model:
    """A model sharing ``model``'s layers but its last (the head), as
    ``model`` runs them (a ``ConvNet``'s pooling first block included).
    ``model`` must be built from a ``keras.Input``."""
    if isinstance(model, ConvNet):
        return ConvNet(
            [keras.Input(shape=model.input_shape[1:]), *model.layers[:-1]],
            name=name,
            pool_first=model.pool_first,
            fold_bias=model.fold_bias,
        )
    return keras.Model(model.inputs, model.layers[-2].output, name=name)


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
    pool_first: bool = True,
    fold_bias: bool = True,
) -> ConvNet:
    """``depth`` blocks of 3x3 conv (``filters`` channels), batch norm, ReLU.

    pooling="stride": each convolution has stride 2 and the last feature map is
    averaged over space, as the MAML code does for Omniglot (28 -> 14 -> 7 -> 4
    -> 2 -> mean). pooling="max": stride 1 and 2x2 max-pooling ('same', i.e.
    ceil) after each block, then flatten, as for miniImageNet and the PyTorch
    reference (28 -> 14 -> 7 -> 4 -> 2, 2*2*filters features).

    Input ``[batch, H, W, C]``; output logits ``[batch, num_classes]``.
    Batch norm is ``MetaBatchNorm`` (exact second derivatives, batch statistics;
    ``fused_batch_norm=False`` keeps it off TensorFlow's fused kernel).
    Run as a ``ConvNet``: the convolutions' biases go to the batch norm
    after them (``fold_bias``) and, with max pooling, the first block pools
    before it normalizes (``pool_first``); with both off the layers run one
    by one.
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
    return ConvNet(layers, name=name, pool_first=pool_first, fold_bias=fold_bias)


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
