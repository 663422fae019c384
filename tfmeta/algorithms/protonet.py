"""Prototypical Networks (Snell, Swersky and Zemel, NeurIPS 2017).

For a task with support set S (N classes, S_k the examples of class k) and
an embedding f_phi, each class is represented by its prototype
    c_k = 1 / |S_k| sum_{(x_i, y_i) in S_k} f_phi(x_i)            ([N, d])
and a query x is classified by a softmax over negative distances,
    p_phi(y = k | x) = softmax_k(-d(f_phi(x), c_k)),
with d the squared Euclidean distance (the paper's choice); ``distance=
"cosine"`` uses instead ``temperature * cos(f_phi(x), c_k)`` (cosine
similarity to L2-normalized prototypes with a fixed scale, as Meta-Baseline,
Chen et al. 2021, and Tian et al. 2020 classify). Meta-training minimizes
the query cross-entropy J(phi) over phi: one gradient, no inner loop.

f_phi is the model without its last layer: the output of the layer before
the head (conv4: ``[batch, d]`` features, d = filters after the strided
net's spatial mean, 2*2*filters after max pooling at 28x28). The head's
kernel and bias are never used: their meta-gradient is zero, so the outer
optimizer leaves them as initialized. Keeping them keeps one model (its
checkpoints, exports and ``Learner``'s non-empty ``model.trainable_variables``)
while the head's size does not limit the way of a task: meta-training may
use more classes (``train_n_way``, e.g. 60-way episodes on Omniglot) than
the meta-test N = ``model.output_shape[-1]``.

Batch norm follows ``transductive`` as for the other learners
(``tfmeta.core.functional.predict``): False (the default here) normalizes
the queries with the support set's statistics, so a query's class does not
depend on the other queries; meta-training embeds support and queries the
same way (train as you serve). True: each set with its own statistics.

Capabilities: "uniform" task weighting only (Gradient Agreement weighs the
inner update theta - theta'_i, and there is none), tasks in a loop or by
``map_fn``, XLA, ``tf.distribute``.

  python -m experiments.train --algorithm=protonet --dataset=omniglot --workdir=/tmp/protonet
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfmeta.checks import check_finite, check_optional_count
from tfmeta.core import functional
from tfmeta.core.algorithm import Algorithm
from tfmeta.core.executor import TaskResult
from tfmeta.core.learner import Learner
from tfmeta.core.squared_distances import squared_distances
from tfmeta.models.conv import up_to_head

DISTANCES = ("euclidean", "cosine")


def class_prototypes(embeddings: tf.Tensor, labels: tf.Tensor, n_way: int) -> tf.Tensor:
    """c_k, the mean of the embeddings ``[S, d]`` of class k (``labels`` ``[S]``
    in [0, n_way), every class present): ``[n_way, d]``."""
    one_hot = tf.one_hot(labels, n_way, dtype=embeddings.dtype)  # [S, N]
    counts = tf.reduce_sum(one_hot, axis=0)  # |S_k|, [N]
    return tf.matmul(one_hot, embeddings, transpose_a=True) / counts[:, tf.newaxis]


def prototype_logits(
    query: tf.Tensor, prototypes: tf.Tensor, distance: str, temperature: float
) -> tf.Tensor:
    """Logits ``[Q, N]`` of query embeddings ``[Q, d]`` against c_k ``[N, d]``:
    -||f_phi(x) - c_k||^2 ("euclidean", from the differences as the authors'
    code: the expansion |x|^2 - 2 x.c + |c|^2 cancels, ~10x the float32
    error; ``tfmeta.core.squared_distances``), or ``temperature * cos(f_phi(x),
    c_k)`` ("cosine")."""
    if distance == "cosine":
        query = tf.math.l2_normalize(query, axis=-1)
        prototypes = tf.math.l2_normalize(prototypes, axis=-1)
        return temperature * tf.matmul(query, prototypes, transpose_b=True)
    return -squared_distances(query, prototypes)


def embedding_network(model: keras.Model) -> tuple[keras.Model, list[int]]:
    """f_phi: a Keras model sharing ``model``'s layers up to (not including)
    its last layer, and the positions of its trainable variables in
    ``model.trainable_variables``."""
    if len(model.layers) < 2:
        raise ValueError(
            f"{model.name} has {len(model.layers)} layer(s): Prototypical Networks need "
            "an embedding before the model's last (head) layer"
        )
    try:
        embedding = up_to_head(model, name="f_phi")
    except (AttributeError, ValueError) as error:
        raise ValueError(
            f"{model.name} must be built from a keras.Input (a Sequential or functional "
            f"model) to expose the embedding before its head: {error}"
        ) from error
    position = {id(v): i for i, v in enumerate(model.trainable_variables)}
    return embedding, [position[id(v)] for v in embedding.trainable_variables]


class PrototypicalNetwork(Learner):
    """Prototypical Networks over the model's embedding f_phi (see the module doc).

    Args:
      model: a built Keras model whose last layer is the head; N =
        ``model.output_shape[-1]`` is the way of meta-test tasks and exports.
      outer_optimizer: Adam in the paper.
      distance: "euclidean" (default) or "cosine".
      temperature: the fixed scale of cosine logits.
      train_n_way: classes per meta-training task (default N).
      transductive: see the module doc (default False).
      task_weighting: must be "uniform".
      task_execution, jit_compile, seed, support_copies, support_augment,
        query_copies, query_augment: see ``Learner``.
    """

    name = "protonet"
    task_weightings = ("uniform",)

    def __init__(
        self,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        distance: str = "euclidean",
        temperature: float = 10.0,
        train_n_way: int | None = None,
        transductive: bool = False,
        task_weighting: str = "uniform",
        task_execution: str = "loop",
        jit_compile: bool = False,
        seed: int = 0,
        support_copies: int = 0,
        support_augment: float = 1.0,
        query_copies: int = 0,
        query_augment: float = 1.0,
    ):
        PrototypicalNetwork.check_arguments(
            distance=distance, temperature=temperature, train_n_way=train_n_way
        )
        super().__init__(
            model,
            outer_optimizer,
            problem="classification",
            inner_steps=0,
            eval_inner_steps=0,
            task_weighting=task_weighting,
            task_execution=task_execution,
            jit_compile=jit_compile,
            seed=seed,
            support_copies=support_copies,
            support_augment=support_augment,
            query_copies=query_copies,
            query_augment=query_augment,
        )
        self.embedding, self._embedding_positions = embedding_network(model)
        self.distance = distance
        self.temperature = float(temperature)
        self.n_way = int(model.output_shape[-1])
        self.train_n_way = self.n_way if train_n_way is None else train_n_way
        self.transductive = transductive

    @staticmethod
    def check_arguments(*, distance, temperature, train_n_way, **_) -> None:
        """(``tfmeta.core.Learner.check_arguments``.)"""
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        check_finite("temperature", temperature, positive=True)
        check_optional_count("train_n_way", train_n_way, minimum=2)

    # --------------------------------------------------------------- pieces
    def embedding_weights(self, params=None) -> list[tf.Tensor]:
        """f_phi's weights from theta ``params`` (aligned with ``variables``;
        default: one snapshot read of them)."""
        params = self.parameters() if params is None else params
        return [params[i] for i in self._embedding_positions]

    def embed(self, params, x: tf.Tensor) -> tf.Tensor:
        """f_phi(x) ``[batch, d]`` under theta ``params`` (aligned with
        ``variables``), normalized with its own batch statistics."""
        return functional.forward(self.embedding, self.embedding_weights(params), x)

    def embed_task(self, params, support_x, query_x) -> tuple[tf.Tensor, tf.Tensor]:
        """(f_phi(support_x) ``[S, d]``, f_phi(query_x) ``[Q, d]``) as ``adapt``
        and ``predict`` compute them; non-transductive: one batch whose batch
        norm statistics come from the support rows."""
        if self.transductive:
            return self.embed(params, support_x), self.embed(params, query_x)
        return functional.support_and_query(
            self.embedding, self.embedding_weights(params), support_x, query_x
        )

    def logits(self, query_embeddings, prototypes) -> tf.Tensor:
        return prototype_logits(
            query_embeddings, prototypes, self.distance, self.temperature
        )

    # ------------------------------------------------------ public interface
    def adapt(
        self, support_x: tf.Tensor, support_y: tf.Tensor, inner_steps: int | None = None
    ) -> tf.Tensor:
        """The prototypes c_k ``[N, d]`` of ``support_x`` ``[N * K, H, W, C]``
        with labels ``support_y`` ``[N * K]`` in [0, N) (no steps: ``inner_steps``
        is ignored; no variable changes)."""
        del inner_steps
        support = self.embed(self.parameters(), support_x)
        return class_prototypes(support, support_y, self.n_way)

    def predict(self, prototypes, query_x, support_x=None, steps=None) -> tf.Tensor:
        """Logits ``[Q, N]`` of ``query_x`` ``[Q, H, W, C]`` against c_k
        ``[N, d]``; non-transductive needs ``support_x`` for the statistics."""
        del steps
        query = functional.predict(
            self.embedding,
            self.embedding_weights(),
            query_x,
            support_x,
            self.transductive,
        )
        return self.logits(query, prototypes)

    def task_result(self, support_x, support_y, query_x, query_y, task_seed):
        """J(phi), the query cross-entropy of a ``train_n_way``-way task, and its
        gradient d J / d theta (zero for the head)."""
        del task_seed  # nothing random
        params = self.parameters()
        with tf.GradientTape() as tape:
            tape.watch(params)
            support, query = self.embed_task(params, support_x, query_x)
            prototypes = class_prototypes(support, support_y, self.train_n_way)
            logits = self.logits(query, prototypes)
            loss = self.loss(logits, query_y)
        meta_gradient = tape.gradient(
            loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return TaskResult(meta_gradient, loss, self.metric(logits, query_y), None)

    def query_outputs(self, support_x, support_y, query_x, steps: int):
        """The queries' logits of one N-way task; ``steps`` is ignored."""
        return self.predict(self.adapt(support_x, support_y), query_x, support_x)

    def serving_functions(self, preprocessing=None) -> dict[str, Any]:
        """``adapt_and_predict`` (and ``adapt_and_predict_images``): prototypes
        from the request's support set, then the queries' logits. No
        ``predict`` signature: without a support set there are no c_k."""
        from tfmeta.export import signatures

        return signatures.adaptation_signatures(self, preprocessing)

    def describe(self) -> dict[str, Any]:
        values = {
            **super().describe(),
            "input_shape": [int(d) for d in self.model.input_shape[1:]],
            "n_way": self.n_way,
            "embedding_dim": int(self.embedding.output_shape[-1]),
            "distance": self.distance,
            "inner_steps": 0,
            "adapt_variables": "none (prototypes c_k: class means of the support embeddings)",
        }
        if self.distance == "cosine":
            values["temperature"] = self.temperature
        return values


ALGORITHM = Algorithm(
    name="protonet",
    learner=PrototypicalNetwork,
    summary="Prototypical Networks (Snell et al. 2017)",
)
