"""Batch-norm values kept per inner step over a model's ``MetaBatchNorm``
layers (MAML++, Antoniou et al. 2019): meta-learned gamma and beta per step
(BNWB) and running statistics per step (BNRS), each ``[S, channels]``.

``PerStepBatchNorm`` makes the variables and reads a step's values; the
learner decides where they enter (which parameters an inner step runs with,
which statistics normalize at evaluation). A step past the last kept one
reads the last (evaluation may take more steps than training).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmeta.models.batch_norm import MetaBatchNorm


class PerStepBatchNorm:
    """Per-step batch-norm values of ``model`` for ``steps`` inner steps.

    Args:
      model: a built Keras model; its ``MetaBatchNorm`` layers are used.
      steps: S, the inner steps kept (at least one).
      parameters: make ``parameters`` (gamma and beta per step, tiled from
        the model's, meta-learned).
      statistics: make ``running_means`` and ``running_variances`` (per
        step, starting at 0 and 1, not trainable; ``update`` moves them).
    """

    def __init__(
        self, model: keras.Model, steps: int, parameters: bool, statistics: bool
    ):
        self.steps = max(steps, 1)
        self.layers = [l for l in model.layers if isinstance(l, MetaBatchNorm)]
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        # gamma and beta per step, with the position of the model's own.
        self.parameters, self.model_indices = [], []
        for layer in self.layers if parameters else ():
            for variable in layer.trainable_variables:
                self.parameters.append(
                    tf.Variable(
                        tf.tile(variable.value[None], [self.steps, 1]),
                        name=f"{layer.name}_{variable.name}_per_step",
                    )
                )
                self.model_indices.append(index[id(variable)])
        self.running_means, self.running_variances = [], []
        dtype = model.trainable_variables[0].dtype
        for layer in self.layers if statistics else ():
            for value, kind, stack in (
                (0.0, "mean", self.running_means),
                (1.0, "variance", self.running_variances),
            ):
                stack.append(
                    tf.Variable(
                        tf.fill(
                            [self.steps, layer.channels], tf.constant(value, dtype)
                        ),
                        trainable=False,
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                        name=f"{layer.name}_running_{kind}",
                    )
                )

    @property
    def statistics_variables(self) -> list[tf.Variable]:
        """The running means, then the running variances."""
        return self.running_means + self.running_variances

    def slot(self, step):
        """The kept step that inner step ``step`` (int or tensor) reads."""
        last = self.steps - 1
        return min(step, last) if isinstance(step, int) else tf.minimum(step, last)

    def substitute(self, params, own_params, step) -> list:
        """``params`` (aligned with the model's trainable variables) with
        each gamma and beta replaced by step ``step``'s from ``own_params``
        (aligned with ``parameters``)."""
        params = list(params)
        slot = self.slot(step)
        for model_index, per_step in zip(self.model_indices, own_params):
            params[model_index] = tf.gather(per_step, slot)
        return params

    def statistics_at(self, step) -> dict:
        """The running statistics of inner step ``step``, by layer name."""
        slot = self.slot(step)
        return {
            layer.name: (tf.gather(mean, slot), tf.gather(variance, slot))
            for layer, mean, variance in zip(
                self.layers, self.running_means, self.running_variances
            )
        }

    def update(self, observed: list[tf.Tensor], momentum: float) -> None:
        """Moves each running statistic towards ``observed`` (aligned with
        ``statistics_variables``) by ``momentum``."""
        for variable, value in zip(self.statistics_variables, observed):
            variable.assign(variable + momentum * (value - variable))
