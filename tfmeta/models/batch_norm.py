"""Batch normalization with exact second derivatives.

Keras' ``BatchNormalization`` computes the variance with the gradient of the
mean stopped (``tf.nn.moments`` style). First derivatives are unaffected, but
the second derivatives that MAML's meta-gradient needs are not exact (about
0.3% relative error through one inner step). ``MetaBatchNorm`` computes
``mean`` and ``var = mean((x - mean)^2)`` with every path differentiable, and
always normalizes with statistics of the current batch (no running averages),
as the MAML and Reptile reference code do.

Transductive vs non-transductive: by default the statistics come from the whole
batch the layer sees (transductive: a query batch is normalized with its own
statistics). Inside ``normalization_reference(n)`` the statistics come from the
first ``n`` rows only; a learner feeds ``concat([support_x, query_x])`` and sets
``n = len(support_x)``, so every query is normalized with support statistics and
its prediction does not depend on the other queries.

Fixed statistics: inside ``fixed_statistics({layer name: (mean, variance)})``
the named layers normalize with the given ``[channels]`` moments instead of
the batch's (running statistics kept by a learner, e.g. MAML++'s per-step
ones); inside ``collect_statistics()`` every layer records the moments it
computed (those of its reference rows), so a learner can average them.

Fused kernel: with the TensorFlow backend, in the transductive case and for a
float32 ``[batch, height, width, channels]`` input, the layer runs TensorFlow's
fused batch norm (``FusedBatchNormV3`` in training mode), one op forward and
one backward instead of a dozen elementwise ops and reductions. The gradient
of that backward (what second-order MAML differentiates) is written out in
closed form in ``batch_norm_grad_grad`` (about twenty elementwise ops and
reductions, where TensorFlow's registered gradient differentiates a composed
backward again and builds several times as many), so second-order
meta-gradients stay exact (tests: the closed form against automatic
differentiation in float64, and the whole meta-gradient against the composed
ops, to float32 round-off, where Keras' layer is off by ~0.3%).
Where the moments are given rather than the input's own (the reference rows'
of the non-transductive case, fixed or collected statistics), the layer
normalizes on the fused kernels' inference mode with the moments as inputs
(``normalize_with_moments``): one op forward, one backward plus per-channel
terms for the moments, and a closed-form gradient of that backward, so the
support set's statistics cost about what the query batch's own do.
``fused=False`` keeps the composed ops; float64 always uses them.

A bias left to the layer (``input_bias``): a convolution's bias before batch
norm shifts the input and its mean alike, so with the input's own moments it
cancels. ``ConvNet`` runs such a convolution without it and hands the bias
to the layer, which subtracts it from the fixed moments and adds it to those
it records; elsewhere it drops out, with an exact zero gradient, where a
bias added at every position costs a full-size add, its gradient's
reduction and, in second order, that reduction's gradient.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import keras
from keras import ops

# TensorFlow's fused kernel raises epsilon to this minimum.
_FUSED_MIN_EPSILON = 1.001e-5

_state = threading.local()


@contextlib.contextmanager
def normalization_reference(num_reference: int | None) -> Iterator[None]:
    """Within this context, MetaBatchNorm layers take statistics from the first
    ``num_reference`` rows of their input (``None``: from all rows)."""
    previous = getattr(_state, "num_reference", None)
    _state.num_reference = num_reference
    try:
        yield
    finally:
        _state.num_reference = previous


def current_normalization_reference() -> int | None:
    return getattr(_state, "num_reference", None)


@contextlib.contextmanager
def fixed_statistics(statistics: dict) -> Iterator[None]:
    """Within this context, the MetaBatchNorm layers named in ``statistics``
    (``{layer name: (mean [channels], variance [channels])}``) normalize with
    those moments instead of their input's."""
    previous = getattr(_state, "fixed", None)
    _state.fixed = statistics
    try:
        yield
    finally:
        _state.fixed = previous


@contextlib.contextmanager
def collect_statistics() -> Iterator[dict]:
    """Within this context, every MetaBatchNorm layer records the moments it
    normalizes with in the yielded dict, ``{layer name: (mean, variance)}``
    (``[channels]`` each; a layer called again overwrites its entry)."""
    previous = getattr(_state, "collected", None)
    collected: dict = {}
    _state.collected = collected
    try:
        yield collected
    finally:
        _state.collected = previous


def statistics_context(name: str) -> bool:
    """Whether a context sets what the normalization layer ``name`` takes its
    moments from (reference rows, fixed statistics for it, or collection)."""
    return (
        current_normalization_reference() is not None
        or name in (getattr(_state, "fixed", None) or {})
        or getattr(_state, "collected", None) is not None
    )


def context_moments(name: str, dtype, moments, input_bias=None):
    """The ``(mean, variance)`` the normalization layer ``name`` normalizes
    with in the current context: the fixed ones given for it, else
    ``moments(num_reference)`` (the statistics of the first ``num_reference``
    rows of its input; ``None``: of all rows); recorded while collecting.

    ``input_bias``: a per-channel bias the layer's input is meant to carry
    but was computed without (``MetaBatchNorm``'s ``input_bias``). Fixed and
    recorded moments are those of the input with it; the mean returned is
    the input's own, so the bias is subtracted from a vector instead of
    added to every position. With the input's own moments it cancels, and
    its gradient is an exact zero."""
    fixed = (getattr(_state, "fixed", None) or {}).get(name)
    if fixed is not None:
        mean, variance = (ops.cast(m, dtype) for m in fixed)
    else:
        mean, variance = moments(current_normalization_reference())
        if input_bias is not None:
            mean = mean + input_bias
    collected = getattr(_state, "collected", None)
    if collected is not None:
        collected[name] = (mean, variance)
    if input_bias is not None:
        mean = mean - input_bias
    return mean, variance


def batch_norm_grad_grad(x, scale, dy, ddx, ddscale, ddoffset, epsilon):
    """The gradient of training-mode batch norm's backward pass, in closed form.

    The backward pass maps ``(dy, x, scale)`` to ``dx = scale * r * P(dy)``,
    ``dscale = sum(dy * xh)``, ``doffset = sum(dy)`` (sums over all axes but
    the last), where ``xh = (x - mean) * r``, ``r = rsqrt(var + epsilon)`` and
    ``P(v) = v - mean(v) - xh * mean(v * xh)``, a symmetric map with
    ``d(xh) = r * P(dx)`` and ``d(r) = -r**2 * mean(xh * dx)``. Given the
    cotangents ``ddx, ddscale, ddoffset`` of its outputs (``None``: zero),
    returns those of ``(dy, x, scale)``:

    * ``dy``: ``ddoffset + ddscale * xh + scale * r * P(ddx)``
    * ``x``: ``ddscale * r * P(dy) - scale * r**2 * (mean(ddx * P(dy)) * xh
      + mean(dy * xh) * P(ddx) + mean(ddx * xh) * P(dy))``
    * ``scale``: ``r * sum(ddx * P(dy))``
    """
    import tensorflow as tf

    axes = list(range(len(x.shape) - 1))

    def mean(v):
        return tf.reduce_mean(v, axes)

    # Each output is a sum of per-channel coefficients times big tensors plus
    # a per-channel constant: coefficients first, then a few broadcast
    # multiply-adds (P(ddx) is never formed).
    count = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
    centered = x - mean(x)
    r = tf.math.rsqrt(mean(tf.square(centered)) + epsilon)
    xh = centered * r
    mean_dy_xh = mean(dy * xh)
    p_dy = dy - (xh * mean_dy_xh + mean(dy))
    zero = tf.zeros_like(scale)
    # dy = dy_xh * xh + dy_ddx * ddx + dy_const
    # x = x_p_dy * P(dy) + x_ddx * ddx + x_xh * xh + x_const
    dy_xh = zero if ddscale is None else ddscale
    dy_const = zero if ddoffset is None else ddoffset
    x_p_dy = zero if ddscale is None else ddscale * r
    grad_scale = zero
    if ddx is None:
        grad_dy = dy_xh * xh + dy_const
        grad_x = x_p_dy * p_dy
    else:
        mean_ddx = mean(ddx)
        mean_ddx_xh = mean(ddx * xh)
        mean_ddx_p_dy = mean(ddx * p_dy)
        scale_r = scale * r
        scale_r2 = scale_r * r
        # scale * r * P(ddx), P(ddx) = ddx - mean(ddx) - xh * mean(ddx * xh)
        dy_xh -= scale_r * mean_ddx_xh
        dy_const -= scale_r * mean_ddx
        grad_dy = scale_r * ddx + dy_xh * xh + dy_const
        # -scale * r**2 * (mean(ddx * P(dy)) * xh + mean(dy * xh) * P(ddx)
        #                  + mean(ddx * xh) * P(dy))
        x_ddx = -scale_r2 * mean_dy_xh
        x_p_dy -= scale_r2 * mean_ddx_xh
        x_xh = -scale_r2 * mean_ddx_p_dy - x_ddx * mean_ddx_xh
        x_const = -x_ddx * mean_ddx
        grad_x = x_p_dy * p_dy + x_ddx * ddx + x_xh * xh + x_const
        grad_scale = r * mean_ddx_p_dy * count
    return grad_dy, grad_x, grad_scale


def _native_grad_grad():
    """The native kernel where the step being traced may run it
    (``tfmeta.models.kernels.usable``); None otherwise."""
    from tfmeta.models import kernels

    library = kernels.usable()
    return None if library is None else library.tfmeta_batch_norm_grad_grad


def _fused_forward(x, scale, offset, mean, variance, epsilon, training):
    """``FusedBatchNormV3`` on NHWC: the output and its three reserve spaces
    (training: the batch's statistics, which ``mean`` and ``variance``, empty,
    do not give; inference: the given moments)."""
    import tensorflow as tf

    y, _, _, *reserves = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=scale,
        offset=offset,
        mean=mean,
        variance=variance,
        epsilon=epsilon,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=training,
    )
    return y, reserves


def _fused_backward(dy, x, scale, reserves, epsilon, training):
    """``FusedBatchNormGradV3`` on NHWC: ``(dx, dscale, doffset)``."""
    import tensorflow as tf

    dx, dscale, doffset, _, _ = tf.raw_ops.FusedBatchNormGradV3(
        y_backprop=dy,
        x=x,
        scale=scale,
        reserve_space_1=reserves[0],
        reserve_space_2=reserves[1],
        reserve_space_3=reserves[2],
        epsilon=epsilon,
        data_format="NHWC",
        is_training=training,
    )
    return dx, dscale, doffset


def fused_batch_norm(x, scale, offset, epsilon):
    """Training-mode batch norm of a float32 ``[N, H, W, C]`` tensor on
    TensorFlow's fused kernels, differentiable twice: the backward pass is
    ``FusedBatchNormGradV3`` and its gradient is ``batch_norm_grad_grad``."""
    import tensorflow as tf

    empty = tf.constant([], x.dtype)

    @tf.custom_gradient
    def forward(x, scale, offset):
        y, reserves = _fused_forward(x, scale, offset, empty, empty, epsilon, True)

        @tf.custom_gradient
        def backward(dy, x, scale):
            dx, dscale, doffset = _fused_backward(dy, x, scale, reserves, epsilon, True)

            def backward_grad(ddx, ddscale, ddoffset):
                op = _native_grad_grad() if ddx is not None else None
                if op is None:
                    return batch_norm_grad_grad(
                        x, scale, dy, ddx, ddscale, ddoffset, epsilon
                    )
                zero = tf.zeros_like(scale)
                return op(
                    x,
                    scale,
                    dy,
                    ddx,
                    zero if ddscale is None else ddscale,
                    zero if ddoffset is None else ddoffset,
                    epsilon=epsilon,
                )

            return (dx, dscale, doffset), backward_grad

        def forward_grad(dy):
            return backward(dy, x, scale)

        return y, forward_grad

    return forward(x, scale, offset)


def normalize_with_moments(x, mean, variance, scale, offset, epsilon):
    """``(x - mean) * rsqrt(variance + epsilon) * scale + offset`` of a float32
    ``[N, H, W, C]`` tensor with given ``[C]`` moments (the reference rows',
    fixed or recorded ones) on TensorFlow's fused kernels, differentiable
    twice in every argument, the moments included.

    Forward, ``FusedBatchNormV3`` in inference mode (one op where the composed
    form takes five passes over ``x``); backward, ``FusedBatchNormGradV3`` in
    inference mode, which gives ``dx = dy * scale * r``, ``dscale = sum(dy *
    xh)`` and ``doffset = sum(dy)`` (``r = rsqrt(variance + epsilon)``, ``xh =
    (x - mean) * r``), whence ``dmean = -scale * r * doffset`` and
    ``dvariance = -scale * r**2 * dscale / 2``; the gradient of that backward
    (second-order MAML's) is ``_moments_grad_grad``, in closed form, since
    TensorFlow's registered one drops the moments' part."""
    import tensorflow as tf

    @tf.custom_gradient
    def forward(x, mean, variance, scale, offset):
        y, reserves = _fused_forward(x, scale, offset, mean, variance, epsilon, False)

        @tf.custom_gradient
        def backward(dy, x, mean, variance, scale):
            # In inference mode the backward kernel reads the moments where
            # training mode reads the forward pass's saved statistics.
            given = (mean, variance, reserves[2])
            dx, dscale, doffset = _fused_backward(dy, x, scale, given, epsilon, False)

            def backward_grad(ddx, ddscale, ddoffset):
                return _moments_grad_grad(
                    dy, x, mean, variance, scale, ddx, ddscale, ddoffset, epsilon
                )

            return (dx, dscale, doffset), backward_grad

        def forward_grad(dy):
            dx, dscale, doffset = backward(dy, x, mean, variance, scale)
            r = tf.math.rsqrt(variance + epsilon)
            scale_r = scale * r
            dmean = -scale_r * doffset
            dvariance = -0.5 * scale_r * r * dscale
            return dx, dmean, dvariance, dscale, doffset

        return y, forward_grad

    return forward(x, mean, variance, scale, offset)


def _moments_grad_grad(dy, x, mean, variance, scale, ddx, ddscale, ddoffset, epsilon):
    """The gradient of ``(dy, x, mean, variance, scale) -> (dx, dscale,
    doffset)``, batch norm's backward with given moments (see
    ``normalize_with_moments``), for the cotangents ``ddx, ddscale,
    ddoffset`` of its outputs (``None``: zero):

    * ``dy``: ``scale * r * ddx + ddscale * xh + ddoffset``
    * ``x``: ``ddscale * r * dy``
    * ``mean``: ``-ddscale * r * sum(dy)``
    * ``variance``: ``-r**3 * scale * sum(ddx * dy) / 2 - r**2 * ddscale *
      sum(dy * xh) / 2``
    * ``scale``: ``r * sum(ddx * dy)``
    """
    import tensorflow as tf

    axes = [0, 1, 2]
    r = tf.math.rsqrt(variance + epsilon)
    zero = tf.zeros_like(scale)
    dy_terms = []
    grad_x = None
    grad_mean, grad_variance, grad_scale = zero, zero, zero
    if ddx is not None:
        sum_ddx_dy = tf.reduce_sum(ddx * dy, axes)
        dy_terms.append(scale * r * ddx)
        grad_scale = r * sum_ddx_dy
        grad_variance = -0.5 * r * r * r * scale * sum_ddx_dy
    if ddscale is not None:
        xh = (x - mean) * r
        dy_terms.append(ddscale * xh)
        grad_x = ddscale * r * dy
        grad_mean = -ddscale * r * tf.reduce_sum(dy, axes)
        grad_variance -= 0.5 * r * r * ddscale * tf.reduce_sum(dy * xh, axes)
    if ddoffset is not None:
        dy_terms.append(tf.broadcast_to(ddoffset, tf.shape(dy)))
    grad_dy = tf.add_n(dy_terms) if dy_terms else tf.zeros_like(dy)
    if grad_x is None:
        grad_x = tf.zeros_like(x)
    return grad_dy, grad_x, grad_mean, grad_variance, grad_scale


def has_batch_norm(model) -> bool:
    """Whether any layer of ``model`` (nested ones too) is a MetaBatchNorm,
    i.e. whether its outputs depend on the batch's statistics."""

    # A plain loop over a stack, no generator: AutoGraph, which converts the
    # functions a tf.function calls, cannot convert generators (and warns).
    stack = list(getattr(model, "layers", ()))
    while stack:
        layer = stack.pop()
        if isinstance(layer, MetaBatchNorm):
            return True
        stack.extend(getattr(layer, "layers", ()))
    return False


@keras.saving.register_keras_serializable(package="tfmeta")
class MetaBatchNorm(keras.layers.Layer):
    """Normalizes over all axes but the last with exact, differentiable moments.

    Input ``[batch, ..., channels]``; ``gamma``/``beta`` of shape ``[channels]``.
    """

    def __init__(
        self,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        fused: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.fused = fused

    def build(self, input_shape):
        channels = input_shape[-1]
        self.channels = int(channels)
        self.gamma = (
            self.add_weight(shape=(channels,), initializer="ones", name="gamma")
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(shape=(channels,), initializer="zeros", name="beta")
            if self.center
            else None
        )

    def _can_fuse(self, inputs) -> bool:
        return (
            self.fused
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
            and self.epsilon >= _FUSED_MIN_EPSILON
        )

    def _scale_and_offset(self, inputs):
        import tensorflow as tf

        channels = inputs.shape[-1]
        # ``.value``: the weights of ``stateless_call``, not the variable's.
        scale = self.gamma.value if self.gamma is not None else tf.ones([channels])
        offset = self.beta.value if self.beta is not None else tf.zeros([channels])
        return scale, offset

    def call(self, inputs, input_bias=None):
        """Normalizes ``inputs``, or ``inputs + input_bias`` where the layer
        before leaves its per-channel bias to this one (``ConvNet``): the
        function and derivatives are the sum's, without the sum at every
        position (``context_moments``)."""
        fuse = self._can_fuse(inputs)
        if fuse and not statistics_context(self.name):
            scale, offset = self._scale_and_offset(inputs)
            if input_bias is not None:  # cancels: an exact zero gradient
                offset = offset + 0.0 * input_bias
            return fused_batch_norm(inputs, scale, offset, self.epsilon)
        axes = tuple(range(len(inputs.shape) - 1))

        def moments(num_reference):
            reference = inputs if num_reference is None else inputs[:num_reference]
            mean = ops.mean(reference, axis=axes)
            return mean, ops.mean(ops.square(reference - mean), axis=axes)

        mean, variance = context_moments(self.name, inputs.dtype, moments, input_bias)
        if fuse:
            return normalize_with_moments(
                inputs, mean, variance, *self._scale_and_offset(inputs), self.epsilon
            )
        outputs = (inputs - mean) * ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            outputs = outputs * self.gamma
        if self.beta is not None:
            outputs = outputs + self.beta
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon, center=self.center, scale=self.scale, fused=self.fused
        )
        return config
