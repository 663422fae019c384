"""An ensemble of trained classifiers answering as one: the mean of their
class probabilities.

Each member adapts to the task on its own (``Learner.served_outputs``: its
own inner loop or prototypes, its own support copies); the ensemble's
outputs are ``log(mean_m softmax(outputs_m))``, so its classes are the
argmax of the averaged probabilities and its loss the cross-entropy of that
mean. Members are typically the same recipe trained from different seeds on
the same class split; they must share the input shape and N. The ensemble
is evaluated as a learner is (``meta_eval_step``) and exported as one
SavedModel with every member's variables (``serving_functions``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import tensorflow as tf


def mean_probability_logits(outputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """``log(mean_m softmax(outputs[m]))`` over the last axis, computed in
    log space (stable for confident members)."""
    log_probabilities = tf.stack([tf.nn.log_softmax(o, axis=-1) for o in outputs])
    return tf.reduce_logsumexp(log_probabilities, axis=0) - math.log(len(outputs))


class Ensemble:
    """Trained classification learners (``tfmeta.Learner``) answering as one.

    Args:
      members: at least two learners with the same input shape and number of
        classes N (``model.output_shape[-1]``), each with theta restored.
    """

    name = "ensemble"
    problem = "classification"
    metric_name = "accuracy"

    def __init__(self, members: Sequence[Any]):
        members = list(members)
        if len(members) < 2:
            raise ValueError(
                f"an ensemble needs at least 2 members, got {len(members)}"
            )
        first = members[0]
        for i, member in enumerate(members):
            if member.problem != "classification":
                raise ValueError(
                    f"ensemble member {i} ({member.name}) is a {member.problem} learner; "
                    "an ensemble averages class probabilities"
                )
            shape, expected = member.model.input_shape[1:], first.model.input_shape[1:]
            if tuple(shape) != tuple(expected):
                raise ValueError(
                    f"ensemble member {i} ({member.name}) takes inputs of shape "
                    f"{tuple(shape)}, member 0 {tuple(expected)}"
                )
            n_way, expected = (
                member.model.output_shape[-1],
                first.model.output_shape[-1],
            )
            if n_way != expected:
                raise ValueError(
                    f"ensemble member {i} ({member.name}) is {n_way}-way, member 0 "
                    f"{expected}-way"
                )
        self.members = members
        self.model = first.model  # the input shape and N the signatures read

    @property
    def eval_inner_steps(self) -> int:
        return self.members[0].eval_inner_steps

    @property
    def saved_variables(self) -> list[tf.Variable]:
        """Every member's variables besides member 0's model's, which an
        export saves as ``model.variables``."""
        from tfmeta.export.servable import tracked  # the export imports core

        variables = list(tracked(self.members[0].saved_variables))
        for member in self.members[1:]:
            variables += tracked(member.model.variables)
            variables += tracked(member.saved_variables)
        return variables

    def served_outputs(
        self, support_x, support_y, query_x, steps: int | None = None
    ) -> tf.Tensor:
        """The mean-probability logits ``[Q, N]`` of the members' answers."""
        return mean_probability_logits(
            [
                m.served_outputs(support_x, support_y, query_x, steps)
                for m in self.members
            ]
        )

    def meta_eval_step(self, episode, inner_steps: int | None = None):
        """Per-task query loss and accuracy ``[B]`` and the mean-probability
        logits ``[B, Q, N]`` of a batch of tasks, from each member's own
        meta-eval step."""
        outputs = mean_probability_logits(
            [m.meta_eval_step(episode, inner_steps)["outputs"] for m in self.members]
        )
        labels = tf.cast(episode[3], tf.int32)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, outputs), axis=-1
        )
        correct = tf.equal(tf.argmax(outputs, axis=-1, output_type=tf.int32), labels)
        accuracy = tf.reduce_mean(tf.cast(correct, outputs.dtype), axis=-1)
        return {"loss": loss, "accuracy": accuracy, "outputs": outputs}

    def serving_functions(self, preprocessing=None) -> dict[str, Any]:
        """``adapt_and_predict`` (and its image variant) of the ensemble."""
        from tfmeta.export import signatures

        return signatures.adaptation_signatures(self, preprocessing)

    def describe(self) -> dict[str, Any]:
        """Member 0's description, named an ensemble of the members' algorithms."""
        return {
            **self.members[0].describe(),
            "algorithm": "ensemble",
            "members": ",".join(m.name for m in self.members),
            "ensemble_size": len(self.members),
        }
