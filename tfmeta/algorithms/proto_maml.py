"""Proto-MAML (Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for
Learning to Learn from Few Examples", ICLR 2020).

MAML whose linear head starts every task at the Prototypical Networks
classifier. With z = f_theta(x) ``[d]`` the features entering the head
(the network below it, under theta) and

  c_k = mean of f_theta(x) over the support examples of class k   ``[n_way, d]``,

the head (kernel W ``[d, n_way]``, bias b ``[n_way]``) starts task i at

  W_k = 2 c_k,   b_k = -||c_k||^2,

so logit_k(x) = 2 c_k . z - ||c_k||^2 = -||z - c_k||^2 + ||z||^2: the
squared-Euclidean prototype classifier (the last term is the same for every
class). MAML's inner steps (second order, or first order) then adapt
theta'_i from there, and ``adapt``/``predict`` and the export use theta'_i.
The meta-gradient flows through c_k into theta's body (as Meta-Dataset's
fo-Proto-MAML keeps it); theta's own head variables are never used, so their
meta-gradient is zero and they keep their initial values.

The support features are normalized with the support set's statistics, as
the inner loop sees the support set in both normalization modes
(transductive or not).

  python -m experiments.train --algorithm=proto_maml --dataset=omniglot \
      --workdir=/tmp/tfmeta_runs/proto_maml_omniglot
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfmeta.algorithms import maml
from tfmeta.algorithms.protonet import class_prototypes, embedding_network
from tfmeta.core import functional
from tfmeta.core.algorithm import Algorithm
from tfmeta.core.inner_loop import FastWeights


def head_indices(model: keras.Model) -> tuple[int, int]:
    """Positions of the head's kernel W ``[d, n_way]`` and bias b ``[n_way]``
    in ``model.trainable_variables``; the head is the model's last layer, a
    ``Dense`` with a bias (conv4, mlp)."""
    head = model.layers[-1]
    if not isinstance(head, keras.layers.Dense) or not head.use_bias:
        raise ValueError(
            f"proto_maml needs a model whose last layer is a Dense head with a bias "
            f"(W [d, n_way], b [n_way]), got {type(head).__name__} {head.name!r}"
        )
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    return position[id(head.kernel)], position[id(head.bias)]


def prototype_head(prototypes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(W ``[d, n_way]``, b ``[n_way]``) with W_k = 2 c_k and b_k = -||c_k||^2
    from the prototypes c_k ``[n_way, d]``."""
    return tf.transpose(2.0 * prototypes), -tf.reduce_sum(tf.square(prototypes), 1)


class ProtoMAML(maml.TaskStartMAML):
    """Proto-MAML; ``first_order=True`` gives fo-Proto-MAML (first-order inner
    loop, the gradient through the prototypes kept). Other arguments:
    ``MAML``; classification only."""

    name = "proto_maml"
    initial_head = "prototypes c_k of the support set: W_k = 2 c_k, b_k = -||c_k||^2"

    def __init__(self, *args, **kwargs):
        ProtoMAML.check_arguments(problem=kwargs.get("problem", "classification"))
        super().__init__(*args, **kwargs)
        self.kernel_index, self.bias_index = head_indices(self.model)
        self.n_way = int(self.model.output_shape[-1])
        # f_theta, the network below the head, and its variables' positions.
        self.embedding, self._embedding_positions = embedding_network(self.model)

    @staticmethod
    def check_arguments(*, problem: str, **_) -> None:
        """(``tfmeta.core.Learner.check_arguments``.)"""
        if problem != "classification":
            raise ValueError(
                f"proto_maml classifies (its head starts at class prototypes), got "
                f"problem={problem!r}"
            )

    def embed(self, params: FastWeights, x: tf.Tensor) -> tf.Tensor:
        """f_theta(x) ``[batch, d]`` for ``x [batch, ...]`` under ``params``,
        normalized with the statistics of ``x``."""
        weights = [params[i] for i in self._embedding_positions]
        return functional.forward(self.embedding, weights, x)

    def initial_weights(
        self, params: FastWeights, support_x: tf.Tensor, support_y: tf.Tensor
    ) -> FastWeights:
        """theta with the head replaced by the prototype head of the support
        set ``support_x [n_way * k_shot, ...]``, ``support_y [n_way * k_shot]``."""
        prototypes = class_prototypes(
            self.embed(params, support_x), support_y, self.n_way
        )
        start = list(params)
        start[self.kernel_index], start[self.bias_index] = prototype_head(prototypes)
        return start


ALGORITHM = Algorithm(
    name="proto_maml",
    learner=ProtoMAML,
    summary="Proto-MAML: MAML from a prototype head (Triantafillou et al. 2020)",
)
