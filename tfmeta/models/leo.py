"""The networks of LEO (Rusu et al., "Meta-Learning with Latent Embedding
Optimization", ICLR 2019, section 3 and appendix B), and the linear
classifier baseline over the same embeddings.

Symbols (paper): x an input embedding in R^d; h = ``num_latents`` the
dimension of a class code z_n; g_phi_e the encoder R^d -> R^h; g_phi_r the
relation network R^2h -> R^2h; g_phi_d the decoder R^h -> R^2d; alpha the
per-dimension latent learning rate ``[h]`` and eta the per-dimension
fine-tuning learning rate ``[d]``, both meta-learned.

The networks follow the reference code (google-deepmind/leo ``model.py``):
linear encoder and decoder without bias, a 3-layer ReLU MLP without bias as
relation network (2h units per layer), Glorot-uniform initialization. A
network output holds a mean and an unnormalized standard deviation u; the
standard deviation is ``max(exp(u) - 1 + offset, 1e-10)`` (reference code;
the paper does not say), with offset 0 for the latents and the Glorot scale
sqrt(2 / (N + d)) for the classifier weights.

Every method taking ``params`` is a pure function of those tensors (sub-layers
run through ``stateless_call``): the model holds the variables, the learner
(``tfmeta.algorithms.leo``) owns sampling, dropout and the inner loops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import keras
import tensorflow as tf

MIN_STDDEV = 1e-10  # the reference code's floor on every standard deviation


class LEOParameters(NamedTuple):
    """The model's parameters as tensors, by network."""

    encoder: list[tf.Tensor]  # phi_e: kernel [d, h]
    relation_network: list[tf.Tensor]  # phi_r: kernels [2h, 2h] x 3
    decoder: list[tf.Tensor]  # phi_d: kernel [h, 2d]
    inner_lr: tf.Tensor  # alpha [h]
    finetune_lr: tf.Tensor  # eta [d]


def gaussian_parameters(
    outputs: tf.Tensor, stddev_offset: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Splits network outputs ``[..., 2m]`` into mean and standard deviation ``[..., m]``.

    sigma = max(exp(u) - (1 - stddev_offset), 1e-10), u the second half.
    """
    mean, unnormalized = tf.split(outputs, 2, axis=-1)
    stddev = tf.exp(unnormalized) - (1.0 - stddev_offset)
    return mean, tf.maximum(stddev, tf.constant(MIN_STDDEV, stddev.dtype))


def _glorot(seed: int | None, offset: int) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(
        seed=None if seed is None else seed + offset
    )


class LEOModel(keras.Model):
    """Encoder g_phi_e, relation network g_phi_r, decoder g_phi_d, and alpha, eta.

    ``trainable_variables`` hold all of them, so a checkpoint of the model's
    variables saves the whole meta-learned state.

    Args:
      embedding_dim: d, the dimension of the input embeddings.
      num_latents: h, the dimension of a class code z_n (64 in the paper).
      inner_lr: initial value of every entry of alpha (reference: 1.0).
      finetune_lr: initial value of every entry of eta (reference: 0.001).
      relation_layers: layers of the relation MLP (reference: 3).
      seed: seed of the Glorot initializers.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_latents: int = 64,
        inner_lr: float = 1.0,
        finetune_lr: float = 0.001,
        relation_layers: int = 3,
        seed: int | None = None,
        name: str = "leo",
        **kwargs,
    ):
        LEOModel.check_arguments(
            embedding_dim=embedding_dim,
            num_latents=num_latents,
            inner_lr=inner_lr,
            finetune_lr=finetune_lr,
            relation_layers=relation_layers,
        )
        super().__init__(name=name, **kwargs)
        self.embedding_dim = embedding_dim
        self.num_latents = num_latents
        self.inner_lr_init = float(inner_lr)
        self.finetune_lr_init = float(finetune_lr)
        self.encoder = keras.layers.Dense(
            num_latents,
            use_bias=False,
            kernel_initializer=_glorot(seed, 0),
            name="encoder",
        )
        self.relation_network = keras.Sequential(
            [
                keras.layers.Dense(
                    2 * num_latents,
                    activation="relu" if i < relation_layers - 1 else None,
                    use_bias=False,
                    kernel_initializer=_glorot(seed, 1 + i),
                    name=f"relation{i}",
                )
                for i in range(relation_layers)
            ],
            name="relation_network",
        )
        self.decoder = keras.layers.Dense(
            2 * embedding_dim,
            use_bias=False,
            kernel_initializer=_glorot(seed, 1 + relation_layers),
            name="decoder",
        )
        self.encoder.build((None, embedding_dim))
        self.relation_network.build((None, 2 * num_latents))
        self.decoder.build((None, num_latents))
        self.inner_lr = self.add_weight(
            shape=(num_latents,),
            initializer=keras.initializers.Constant(inner_lr),
            name="inner_lr",
        )
        self.finetune_lr = self.add_weight(
            shape=(embedding_dim,),
            initializer=keras.initializers.Constant(finetune_lr),
            name="finetune_lr",
        )
        self.built = True
        positions = {id(v): i for i, v in enumerate(self.trainable_variables)}
        self._positions = LEOParameters(
            encoder=[positions[id(v)] for v in self.encoder.trainable_variables],
            relation_network=[
                positions[id(v)] for v in self.relation_network.trainable_variables
            ],
            decoder=[positions[id(v)] for v in self.decoder.trainable_variables],
            inner_lr=positions[id(self.inner_lr)],
            finetune_lr=positions[id(self.finetune_lr)],
        )

    @staticmethod
    def check_arguments(
        *, num_latents, inner_lr, finetune_lr, embedding_dim=1, relation_layers=3, **_
    ) -> None:
        """Raises ValueError naming a bad argument (also a config's check)."""
        from tfmeta.checks import check_finite

        for label, value in (
            ("embedding_dim", embedding_dim),
            ("num_latents", num_latents),
            ("relation_layers", relation_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label} must be an integer >= 1, got {value!r}")
        check_finite("inner_lr", inner_lr, positive=True)
        check_finite("finetune_lr", finetune_lr, positive=True)

    def call(self, *args, **kwargs):
        raise NotImplementedError(
            "LEOModel is not called directly: tfmeta.algorithms.LEO runs its "
            "networks through encode/relate/decode with explicit parameters"
        )

    # ------------------------------------------------------------ parameters
    def split_parameters(self, params: Sequence[tf.Tensor]) -> LEOParameters:
        """Groups tensors aligned with ``trainable_variables`` by network."""
        params = list(params)
        if len(params) != len(self.trainable_variables):
            raise ValueError(
                f"expected {len(self.trainable_variables)} tensors aligned with the "
                f"model's trainable variables, got {len(params)}"
            )
        where = self._positions
        return LEOParameters(
            encoder=[params[i] for i in where.encoder],
            relation_network=[params[i] for i in where.relation_network],
            decoder=[params[i] for i in where.decoder],
            inner_lr=params[where.inner_lr],
            finetune_lr=params[where.finetune_lr],
        )

    def network_weights(self, params: LEOParameters) -> list[tf.Tensor]:
        """The weights under the L2 penalty: every kernel, not alpha or eta."""
        return [*params.encoder, *params.relation_network, *params.decoder]

    def decoder_kernel(self, params: LEOParameters) -> tf.Tensor:
        """The decoder's kernel ``[h, 2d]`` (its rows: one per latent dimension)."""
        return params.decoder[0]

    # -------------------------------------------------------------- networks
    def encode(self, params: LEOParameters, x: tf.Tensor) -> tf.Tensor:
        """g_phi_e: embeddings ``[..., d]`` -> codes ``[..., h]``."""
        outputs, _ = self.encoder.stateless_call(params.encoder, [], x)
        return outputs

    def relate(self, params: LEOParameters, pairs: tf.Tensor) -> tf.Tensor:
        """g_phi_r: code pairs ``[..., 2h]`` -> ``[..., 2h]`` (mean, unnormalized std)."""
        flat = tf.reshape(pairs, [-1, 2 * self.num_latents])
        outputs, _ = self.relation_network.stateless_call(
            params.relation_network, [], flat
        )
        return tf.reshape(outputs, tf.shape(pairs))

    def decode(self, params: LEOParameters, latents: tf.Tensor) -> tf.Tensor:
        """g_phi_d: codes ``[..., h]`` -> ``[..., 2d]`` (mean, unnormalized std of w)."""
        outputs, _ = self.decoder.stateless_call(params.decoder, [], latents)
        return outputs

    # ------------------------------------------------- distributions (paper)
    def latent_distribution(
        self,
        params: LEOParameters,
        support_x: tf.Tensor,
        support_y: tf.Tensor,
        n_way: int,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """mu_n, sigma_n of q(z_n | D^tr) for every class n (paper, eq. 7).

        With M = N*K support embeddings x ``[M, d]`` and labels ``[M]`` in [0, N):

            (mu_n, sigma_n) = 1/(N K^2) sum_{k_n=1..K} sum_{m=1..N} sum_{k_m=1..K}
                              g_phi_r(g_phi_e(x_n^{k_n}), g_phi_e(x_m^{k_m})),

        i.e. the relation network applied to every ordered pair (both codes
        concatenated, pairs with itself included) and averaged, for class n,
        over the N*K^2 pairs whose first element belongs to n.

        Returns mean and standard deviation ``[N, h]``.
        """
        codes = self.encode(params, support_x)  # [M, h]
        count = tf.shape(codes)[0]  # static or not (a served request's support size)
        grid = tf.stack([count, count, tf.shape(codes)[1]])
        left = tf.broadcast_to(codes[:, tf.newaxis, :], grid)  # [M, M, h]
        right = tf.broadcast_to(codes[tf.newaxis, :, :], grid)  # [M, M, h]
        relations = self.relate(params, tf.concat([left, right], axis=-1))
        per_example = tf.reduce_mean(
            relations, axis=1
        )  # [M, 2h]: mean over all N*K partners
        membership = tf.transpose(
            tf.one_hot(tf.cast(support_y, tf.int32), n_way, dtype=codes.dtype)
        )  # [N, M]
        membership /= tf.reduce_sum(membership, axis=1, keepdims=True)
        # A class with no support example would divide by zero: callers check
        # (training episodes hold K of each class; served requests are checked).
        return gaussian_parameters(tf.matmul(membership, per_example))

    def weight_distribution(
        self, params: LEOParameters, latents: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and standard deviation ``[N, d]`` of the class weights w_n given z_n ``[N, h]``."""
        n_way = latents.shape[0]
        offset = math.sqrt(2.0 / (n_way + self.embedding_dim))
        return gaussian_parameters(self.decode(params, latents), stddev_offset=offset)


def leo_model(
    embedding_dim: int,
    num_latents: int = 64,
    inner_lr: float = 1.0,
    finetune_lr: float = 0.001,
    seed: int | None = None,
) -> LEOModel:
    """A built ``LEOModel`` (factory matching ``conv4`` / ``mlp``)."""
    return LEOModel(
        embedding_dim,
        num_latents=num_latents,
        inner_lr=inner_lr,
        finetune_lr=finetune_lr,
        seed=seed,
    )


def linear_classifier(
    n_way: int, embedding_dim: int, seed: int | None = None, name: str = "linear"
) -> keras.Sequential:
    """The baseline for MAML/FOMAML on embeddings: logits = x W + b.

    Input ``[batch, d]``; output ``[batch, n_way]``. The input passes an
    identity layer first, so the embedding before the head is x itself (the
    nearest centroid and Prototypical Networks read it there).
    """
    return keras.Sequential(
        [
            keras.Input(shape=(embedding_dim,)),
            keras.layers.Identity(name="embedding"),
            keras.layers.Dense(n_way, kernel_initializer=_glorot(seed, 0), name="head"),
        ],
        name=name,
    )
