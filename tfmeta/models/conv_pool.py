"""A 3x3 stride-1 "same" convolution followed by 2x2 stride-2 "same" max
pooling, ``max_pool.max_pool(tf.nn.conv2d(x, kernel, 1, "SAME"))``, with
every derivative.

In a meta-train step on a CPU (``tfmeta.models.kernels.usable``) native
kernels compute it in one pass that writes only the pooled maps and each
window's first maximum as a one-byte position: the full-size convolution is
never written, read back or pooled. Given those positions the pooled maps
are linear in the kernel, the convolution evaluated at one position per
window (``TfmetaConvPoolAt``), and the kernel's gradient is that map's
transpose (``TfmetaConvPoolFilterGrad``: the convolution's filter gradient
with each window's gradient at its position, a quarter of the positions).
Each of the two is the other's gradient, so every order of derivative with
respect to the kernel stays on them; the input's gradient is the
convolution's, of the gradient scattered to the positions (TensorFlow ops).

The native figures are those of the composed ops to float round-off: the
sums run in another order than oneDNN's, so a maximum whose four values lie
within round-off of each other can pick another position
(tests/models/test_conv_pool.py). Elsewhere (GPUs, XLA, exported functions)
the composed TensorFlow ops run.
"""

from __future__ import annotations

from tfmeta.models import max_pool


def conv_pool(x, kernel):
    """``max_pool.max_pool(tf.nn.conv2d(x, kernel, 1, "SAME"))`` for a
    channels-last ``x`` and a ``[3, 3, channels, filters]`` ``kernel``."""
    import tensorflow as tf

    from tfmeta.models import kernels

    three_by_three = tuple(kernel.shape[:2]) == (3, 3)
    library = kernels.usable(x, kernel) if three_by_three else None
    if library is None:
        return max_pool.max_pool(tf.nn.conv2d(x, kernel, 1, "SAME"))

    @tf.custom_gradient
    def fused(x, kernel):
        pooled, position = library.tfmeta_conv_pool(x, kernel)

        def gradient(upstream):
            return _gradients(library, x, kernel, position, upstream)

        return pooled, gradient

    return fused(x, kernel)


def _input_gradient(library, x, kernel, position, upstream):
    """The gradient with respect to ``x`` of the pooled convolution at
    ``position``: the convolution's, of ``upstream`` scattered to the
    positions."""
    import tensorflow as tf

    height, width = max_pool.height_width(x)
    scattered = max_pool.scatter(library, upstream, position, height, width)
    return tf.nn.conv2d_transpose(scattered, kernel, tf.shape(x), 1, "SAME")


def _gradients(library, x, kernel, position, upstream):
    """The gradients of the pooled convolution at ``position`` with respect
    to ``x`` and ``kernel``."""
    return (
        _input_gradient(library, x, kernel, position, upstream),
        _filter_gradient(library, x, position, upstream),
    )


def _at(library, x, kernel, position):
    """The convolution at each window's ``position``; its gradient with
    respect to the kernel is ``_filter_gradient``."""
    import tensorflow as tf

    @tf.custom_gradient
    def at(x, kernel):
        def gradient(upstream):
            return _gradients(library, x, kernel, position, upstream)

        return library.tfmeta_conv_pool_at(x, kernel, position), gradient

    return at(x, kernel)


def _filter_gradient(library, x, position, pooled):
    """The kernel's gradient for the pooled gradient ``pooled``; its
    gradient with respect to ``pooled`` is ``_at``."""
    import tensorflow as tf

    @tf.custom_gradient
    def filter_gradient(x, pooled):
        def gradient(kernel):
            return (
                _input_gradient(library, x, kernel, position, pooled),
                _at(library, x, kernel, position),
            )

        return library.tfmeta_conv_pool_filter_grad(x, position, pooled), gradient

    return filter_gradient(x, pooled)
