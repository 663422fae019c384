"""What a task asks for: its loss and its metric over model outputs.

Classification: logits ``[batch, n_way]`` against int labels ``[batch]``,
mean softmax cross-entropy and accuracy. Regression: outputs ``[batch, d]``
against targets of the same shape, mean squared error for both.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

PROBLEMS = ("classification", "regression")


@dataclasses.dataclass(frozen=True)
class Problem:
    """The loss and metric of ``kind`` ("classification" or "regression")."""

    kind: str = "classification"

    def __post_init__(self):
        if self.kind not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {self.kind!r}")

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.kind == "classification" else "mse"

    @property
    def higher_is_better(self) -> bool:
        return self.kind == "classification"

    def loss(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Mean cross-entropy of logits against int labels, or mean squared error."""
        if self.kind == "classification":
            return tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    tf.cast(y, tf.int32), outputs
                )
            )
        return tf.reduce_mean(tf.square(outputs - tf.cast(y, outputs.dtype)))

    def metric(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Accuracy (classification) or mean squared error (regression), a scalar."""
        if self.kind == "classification":
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
            return tf.reduce_mean(
                tf.cast(tf.equal(predicted, tf.cast(y, tf.int32)), outputs.dtype)
            )
        return tf.reduce_mean(tf.square(outputs - tf.cast(y, outputs.dtype)))
