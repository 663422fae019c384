"""Squared Euclidean distances between two sets of rows, from their
differences: ``sum((x[:, None] - c[None]) ** 2, -1)``.

Formed from each difference, nothing cancels (the expansion ``|x|^2 - 2 x.c
+ |c|^2`` does: about ten times the float32 error). TensorFlow ops write the
``[Q, N, d]`` differences, square them and sum, and the gradient takes as
many passes over that tensor again. In a meta-train step on a CPU
(``tfmeta.models.kernels.usable``) native kernels compute the distances and
both gradients in one pass each, without it; the gradient's own gradient
(none of the learners takes it) is that of the TensorFlow ops. Elsewhere
(GPUs, XLA, exported functions) the TensorFlow ops run.
"""

from __future__ import annotations


def squared_distances(x, c):
    """``[Q, N]`` squared distances between the rows of ``x`` ``[Q, d]`` and
    of ``c`` ``[N, d]``."""
    import tensorflow as tf

    from tfmeta.models import kernels

    library = kernels.usable(x, c)
    if library is None:
        return _differences(x, c)

    @tf.custom_gradient
    def distances(x, c):
        def gradient(upstream):
            return _gradient(library, x, c, upstream)

        return library.tfmeta_squared_distances(x, c), gradient

    return distances(x, c)


def _differences(x, c):
    import tensorflow as tf

    return tf.reduce_sum(tf.square(x[:, tf.newaxis, :] - c[tf.newaxis, :, :]), -1)


def _gradient(library, x, c, upstream):
    """The gradients with respect to ``x`` and ``c``; their own gradient is
    that of the TensorFlow ops'."""
    import tensorflow as tf

    @tf.custom_gradient
    def gradient(x, c, upstream):
        def second(x_cotangent, c_cotangent):
            with tf.GradientTape() as tape:
                tape.watch([x, c, upstream])
                with tf.GradientTape() as inner:
                    inner.watch([x, c])
                    distances = _differences(x, c)
                first = inner.gradient(distances, [x, c], output_gradients=upstream)
            return tape.gradient(
                first, [x, c, upstream], output_gradients=[x_cotangent, c_cotangent]
            )

        return library.tfmeta_squared_distances_grad(x, c, upstream), second

    return gradient(x, c, upstream)
