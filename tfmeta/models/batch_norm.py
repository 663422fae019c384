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

Fused kernel: with the TensorFlow backend, in the transductive case and for a
float32 ``[batch, height, width, channels]`` input, the layer runs TensorFlow's
fused batch norm (``FusedBatchNormV3`` in training mode), one op forward and
one backward instead of a dozen elementwise ops and reductions. Its gradient
is the exact gradient of training-mode batch norm and TensorFlow
differentiates that gradient again exactly, so second-order meta-gradients are
unchanged (test: equal to the composed ops to float32 round-off, where Keras'
layer is off by ~0.3%). ``fused=False`` keeps the composed ops; float64 and the
non-transductive case always use them.
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

    def _can_fuse(self, inputs, num_reference) -> bool:
        return (
            self.fused
            and num_reference is None
            and keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
            and self.epsilon >= _FUSED_MIN_EPSILON
        )

    def _fused_call(self, inputs):
        import tensorflow as tf

        channels = inputs.shape[-1]
        # ``.value``: the weights of ``stateless_call``, not the variable's.
        scale = self.gamma.value if self.gamma is not None else tf.ones([channels])
        offset = self.beta.value if self.beta is not None else tf.zeros([channels])
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            scale,
            offset,
            epsilon=self.epsilon,
            is_training=True,
        )
        return outputs

    def call(self, inputs):
        reference = inputs
        num_reference = current_normalization_reference()
        if self._can_fuse(inputs, num_reference):
            return self._fused_call(inputs)
        if num_reference is not None:
            reference = inputs[:num_reference]
        axes = tuple(range(len(inputs.shape) - 1))
        mean = ops.mean(reference, axis=axes, keepdims=True)
        variance = ops.mean(ops.square(reference - mean), axis=axes, keepdims=True)
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
