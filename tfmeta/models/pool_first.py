"""A network's first block, 3x3 conv, batch norm, ReLU, 2x2 max pooling,
computed with the pooling first and the moments from the input's patches.

Batch norm is, per channel, a scale and a shift; max pooling commutes with
the shift and with the ReLU after it (both increasing), and the scale goes
into the kernel, the convolution being linear in it:

    maxpool(relu(bn(y))) = relu(maxpool(conv(x, K * gamma r)) + beta - gamma r mean)

with ``y = conv(x, K)`` and ``r = rsqrt(variance + epsilon)`` per output
channel (the convolution's bias goes to the normalization as its
``input_bias``, where it cancels against the maps' own moments). The pooling
sees the normalized maps' order, decreasing where ``gamma`` is negative, as
the layers one by one do; the shift and the ReLU run on the pooled maps, a
quarter of the size, and the scale's gradient comes through the kernel's.

The moments of ``y`` follow from those of the input's 3x3 patches
(zero-padded as the convolution's "same"): ``mean = K^T mean(p)``,
``variance = sum(K * (C K))`` for the patches' covariance ``C``, which has
``9 * channels_in`` rows; so no full-size map is read for them and none gets
their gradient. The convolution and the pooling run as
``tfmeta.models.conv_pool`` computes them: in a meta-train step on a CPU,
one native pass that writes only the pooled maps. On the first block, whose
input has few channels and whose maps are the network's largest, the passes
saved are the normalization's, the ReLU's, their gradients' and the
full-size convolution's (timed in docs/performance.md). Its moments are also
closer to exact in float32 than a fused kernel's sums over every position;
in a meta-train step the patches' statistics are one native pass too
(``patch_statistics``).

Every step is a TensorFlow op with its registered gradients (second order
included), the pooled convolution ``tfmeta.models.conv_pool``'s: the
function is the composed block's, its derivatives those of the composed ops
wherever the pooled maximum is unique (ties differ only in which tied
position gets the gradient). The statistics contexts of
``tfmeta.models.batch_norm`` (reference rows, fixed and collected moments)
apply as for the block's ``MetaBatchNorm``, under its name.
"""

from __future__ import annotations

import keras

from tfmeta.models import conv_pool, max_pool
from tfmeta.models.batch_norm import MetaBatchNorm, context_moments

# Patches of inputs with more channels than this: the covariance (9 rows a
# channel) would cost more than the moments of the full-size maps.
MAX_INPUT_CHANNELS = 4


def applies(layers, inputs) -> bool:
    """Whether ``layers`` start with a block this module computes on
    ``inputs``: a 3x3 stride-1 "same" convolution with bias and no
    activation over at most ``MAX_INPUT_CHANNELS`` channels, a MetaBatchNorm,
    a plain ReLU and a 2x2 stride-2 max pooling, all channels-last, computing
    in the weights' and the inputs' dtype (no mixed precision)."""
    input_shape = inputs.shape
    if len(layers) < 4 or len(input_shape) != 4:
        return False
    conv, norm, relu, pool = layers[:4]
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    return (
        all(
            layer.compute_dtype == layer.variable_dtype == dtype
            for layer in (conv, norm)
        )
        and type(conv) is keras.layers.Conv2D
        and tuple(conv.kernel_size) == (3, 3)
        and tuple(conv.strides) == (1, 1)
        and tuple(conv.dilation_rate) == (1, 1)
        and conv.padding == "same"
        and conv.groups == 1
        and conv.use_bias
        and conv.activation is keras.activations.linear
        and conv.data_format == "channels_last"
        and input_shape[-1] is not None
        and int(input_shape[-1]) <= MAX_INPUT_CHANNELS
        and type(norm) is MetaBatchNorm
        and type(relu) is keras.layers.ReLU
        and relu.max_value is None
        and float(relu.negative_slope) == 0.0
        and float(relu.threshold) == 0.0
        and max_pool.replaces(pool)
    )


def patch_statistics(x, channels_in: int):
    """The mean and covariance of ``x``'s 3x3 patches (zero-padded as the
    convolution's "same"), entry ``(3 * kh + kw) * channels_in + c``: in a
    meta-train step on a CPU one native pass (``tfmeta.models.kernels``),
    else a patch convolution and a matmul of the centered patches."""
    import tensorflow as tf

    from tfmeta.models import kernels

    library = kernels.usable(x)
    if library is None:
        return _patch_statistics(x, channels_in)

    @tf.custom_gradient
    def native(x):
        def gradient(mean_grad, covariance_grad):
            # The input's gradient (none in training: the input is the data)
            # is that of the TensorFlow ops'.
            with tf.GradientTape() as tape:
                tape.watch(x)
                moments = _patch_statistics(x, channels_in)
            return tape.gradient(
                moments, x, output_gradients=[mean_grad, covariance_grad]
            )

        return library.tfmeta_patch_moments(x), gradient

    return native(x)


def _patch_statistics(x, channels_in: int):
    import tensorflow as tf

    size = 9 * channels_in
    identity = tf.reshape(tf.eye(size, dtype=x.dtype), [3, 3, channels_in, size])
    patches = tf.reshape(tf.nn.conv2d(x, identity, 1, "SAME"), [-1, size])
    patch_mean = tf.reduce_mean(patches, axis=0)
    centered = patches - patch_mean
    count = tf.cast(tf.shape(patches)[0], x.dtype)
    return patch_mean, tf.matmul(centered, centered, transpose_a=True) / count


def patch_moments(x, kernel):
    """Mean and variance over every position of ``conv(x, kernel)`` (3x3,
    "same"), from the mean and covariance of ``x``'s 3x3 patches."""
    import tensorflow as tf

    size = 9 * kernel.shape[2]
    patch_mean, covariance = patch_statistics(x, kernel.shape[2])
    flat = tf.reshape(kernel, [size, -1])
    mean = tf.linalg.matvec(flat, patch_mean, transpose_a=True)
    variance = tf.reduce_sum(flat * tf.matmul(covariance, flat), axis=0)
    return mean, variance


def block(x, conv: keras.layers.Conv2D, norm: MetaBatchNorm):
    """``pool(relu(norm(conv(x))))`` for the layers ``applies`` accepts, with
    their current weights (those of ``stateless_call`` inside one)."""
    import tensorflow as tf

    kernel, bias = conv.kernel.value, conv.bias.value
    channels = kernel.shape[-1]
    gamma = norm.gamma.value if norm.gamma is not None else tf.ones([channels], x.dtype)
    beta = norm.beta.value if norm.beta is not None else tf.zeros([channels], x.dtype)

    def moments(num_reference):
        reference = x if num_reference is None else x[:num_reference]
        return patch_moments(reference, kernel)

    mean, variance = context_moments(norm.name, x.dtype, moments, bias)
    # The normalization's scale, per channel, goes into the kernel: the
    # convolution is linear in it, and the pooling sees the normalized maps'
    # order (decreasing where gamma is negative). The shift stays outside.
    scale = gamma * tf.math.rsqrt(variance + norm.epsilon)
    pooled = conv_pool.conv_pool(x, kernel * scale)
    return tf.nn.relu(pooled + (beta - scale * mean))
