"""2x2 stride-2 "same" max pooling, the function and first derivative of
``tf.nn.max_pool2d``, with a cheaper second derivative.

The gradient of max pooling is ``MaxPoolGrad``: each window's incoming
gradient goes to the window's first maximum. That is linear in the incoming
gradient, so its own gradient (what second-order MAML takes through every
inner step) places nothing new: it reads, for each window, the value at the
same first maximum. TensorFlow's registered op for it, ``MaxPoolGradGrad``,
searches every window for its maximum again; here the first maxima come as
a 0/1 mask, ``MaxPoolGrad`` of ones (the same op, so ties resolve the same
way), and the read is the mask times the values summed over each window.
Every figure, ties included, is that of ``tf.nn.max_pool2d`` and its
registered gradients (tests/models/test_max_pool.py); only the work differs
(timed in docs/performance.md).

In a meta-train step on a CPU (``tfmeta.models.kernels.usable``), native
kernels do the same in one pass each: the pooling also writes each window's
first maximum as a one-byte position (the first in row-major order holding
the maximum: the one ``MaxPoolGrad`` picks); the gradient scatters the
incoming gradient to those positions, and the gradient's gradient gathers
the values there. Each of the two linear maps is the other's gradient, so
every order of derivative stays on them, and the full-size input need not
be kept for the backward pass.

A plain ReLU before the pooling can run after it instead, on a quarter of
the values: ``relu(maxpool(x)) = maxpool(relu(x))``, as the ReLU is
increasing. The gradients agree too: a window whose maximum is positive
sends its gradient to the same first maximum either way, and one whose
maximum is not positive sends none.
"""

from __future__ import annotations

import keras

WINDOW = {"ksize": [1, 2, 2, 1], "strides": [1, 2, 2, 1], "padding": "SAME"}


def replaces(layer) -> bool:
    """Whether ``layer`` is a pooling ``max_pool`` computes: a channels-last
    2x2 stride-2 "same" ``keras.layers.MaxPooling2D``."""
    return (
        type(layer) is keras.layers.MaxPooling2D
        and tuple(layer.pool_size) == (2, 2)
        and tuple(layer.strides) == (2, 2)
        and layer.padding == "same"
        and layer.data_format == "channels_last"
    )


def commutes(layer) -> bool:
    """Whether ``layer`` is a plain ``keras.layers.ReLU`` (no cap, slope or
    threshold), which may run after a pooling ``max_pool`` computes."""
    return (
        type(layer) is keras.layers.ReLU
        and layer.max_value is None
        and not layer.negative_slope
        and not layer.threshold
    )


def window_sum(values):
    """The sum over each 2x2 window of a channels-last ``values``, padded
    with zeros at the bottom and right to even sizes (as "same" pads)."""
    import tensorflow as tf

    shape = tf.shape(values)
    values = tf.pad(values, [[0, 0], [0, shape[1] % 2], [0, shape[2] % 2], [0, 0]])
    blocks = tf.nn.space_to_depth(values, 2)
    blocks_shape = tf.shape(blocks)
    split = tf.concat([blocks_shape[:3], [4, shape[3]]], axis=0)
    return tf.reduce_sum(tf.reshape(blocks, split), axis=3)


def max_pool(x):
    """``tf.nn.max_pool2d(x, 2, 2, "SAME")`` for a channels-last ``x``."""
    import tensorflow as tf

    from tfmeta.models import kernels

    library = kernels.usable(x)
    if library is not None:
        return _native_pool(library, x)

    @tf.custom_gradient
    def pool(x):
        y = tf.nn.max_pool2d(x, 2, 2, "SAME")

        def gradient(upstream):
            @tf.custom_gradient
            def scatter(upstream):
                def read(values):
                    first = tf.raw_ops.MaxPoolGrad(
                        orig_input=x, orig_output=y, grad=tf.ones_like(y), **WINDOW
                    )
                    return window_sum(values * first)

                scattered = tf.raw_ops.MaxPoolGrad(
                    orig_input=x, orig_output=y, grad=upstream, **WINDOW
                )
                return scattered, read

            return scatter(upstream)

        return y, gradient

    return pool(x)


def _native_pool(library, x):
    """``max_pool`` on the native kernels (``tfmeta.models.kernels``)."""
    import tensorflow as tf

    @tf.custom_gradient
    def pool(x):
        y, position = library.tfmeta_max_pool(x)
        height, width = height_width(x)

        def gradient(upstream):
            return scatter(library, upstream, position, height, width)

        return y, gradient

    return pool(x)


def height_width(x):
    """A channels-last ``x``'s height and width: constants where the trace
    knows them, else tensors."""
    import tensorflow as tf

    return tuple(
        size if size is not None else tf.shape(x)[axis]
        for axis, size in ((1, x.shape[1]), (2, x.shape[2]))
    )


def scatter(library, pooled, position, height, width):
    """Each pooled value at its window's first ``position``, zeros elsewhere
    in a ``height`` x ``width`` map (``MaxPoolGrad``), on the native kernels
    ``library``; its gradient is ``_gather``. The gradient of the native
    pooling, and of ``tfmeta.models.conv_pool``'s with respect to its input."""
    import tensorflow as tf

    @tf.custom_gradient
    def scatter_values(pooled):
        def gradient(values):
            return _gather(library, values, position, height, width)

        values = library.tfmeta_max_pool_scatter(pooled, position, height, width)
        return values, gradient

    return scatter_values(pooled)


def _gather(library, values, position, height, width):
    """Each window's value at its first maximum; its gradient is
    ``scatter``."""
    import tensorflow as tf

    @tf.custom_gradient
    def gather(values):
        def gradient(pooled):
            return scatter(library, pooled, position, height, width)

        return library.tfmeta_max_pool_gather(values, position), gradient

    return gather(values)
