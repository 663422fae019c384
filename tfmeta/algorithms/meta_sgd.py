"""Meta-SGD (Li, Zhou, Chen and Li, "Meta-SGD: Learning to Learn Quickly for
Few-Shot Learning", 2017).

MAML with a learned inner learning rate alpha of the same shape as theta:
for task i with support set D_i^tr and query set D_i^val,

  theta'_i = theta - alpha ∘ grad_theta L(theta; D_i^tr)        (one step in the paper)

(∘: elementwise), and (theta, alpha) are meta-learned together on
sum_i L(theta'_i; D_i^val): alpha encodes both the step size and the
direction of each parameter's update. d theta'_i / d alpha = -grad L(theta;
D_i^tr), so alpha's meta-gradient needs no second derivative; theta's is
MAML's (second order by default; ``first_order=True`` stops the gradient of
the inner gradient and keeps alpha's path).

alpha is one tensor per adapted tensor of theta (all of them, or the head's
with ``adapt_variables="head"``), a meta-parameter the learner owns
(``own_variables``): checkpointed, restored and exported with theta.
Initialization (``meta_sgd_init``): "uniform", each entry drawn from
U[0.005, 0.1] as the paper does (stated for its regression experiments;
used here for every dataset); or "constant", every entry = ``inner_lr``, as
learn2learn's ``MetaSGD`` does.

Batch norm under oneDNN: with a per-element alpha on batch norm's scale and
offset (``adapt_variables="all"``), TensorFlow's oneDNN graph rewrite (the
fusion of ``Conv2DBackpropFilter`` with ``BiasAddGrad``) builds a graph with
a cycle in about 2 of 5 processes, failing the first meta-step ("N nodes in a
cycle"); with ``"all_but_norm"`` (MAML++'s code's choice: normalization
layers do not adapt) or with oneDNN off it never did in 21 tries. So
the learner (and the config ``check``) refuses "all" for a float32 model with
batch norm while oneDNN is on; the learner's default is "all_but_norm".

  python -m experiments.train --algorithm=meta_sgd --dataset=omniglot \
      --workdir=/tmp/tfmeta_runs/meta_sgd_omniglot
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmeta import runtime
from tfmeta.algorithms import maml
from tfmeta.core.algorithm import Algorithm, Config
from tfmeta.core.fast_weight_learner import inner_optimizer_from
from tfmeta.core.inner_loop import adapted_indices
from tfmeta.core.inner_optimizers import InnerSGD
from tfmeta.models.batch_norm import MetaBatchNorm

INITS = ("uniform", "constant")
PAPER_INIT_RANGE = (0.005, 0.1)  # alpha ~ U[0.005, 0.1] (Li et al. 2017)


def initial_alphas(
    shapes: list[tuple[int, ...]], init: str, inner_lr: float, seed: int
) -> list[np.ndarray]:
    """alpha's initial values, one array per shape: U[0.005, 0.1] drawn from
    ``seed`` ("uniform"), or ``inner_lr`` everywhere ("constant")."""
    if init == "constant":
        return [np.full(shape, inner_lr) for shape in shapes]
    rng = np.random.default_rng(seed)
    low, high = PAPER_INIT_RANGE
    return [rng.uniform(low, high, size=shape) for shape in shapes]


def check_onednn(adapt_variables: str, batch_norm: bool, float32: bool) -> None:
    """Refuses batch norm adapting with per-element alpha in a float32 model
    under oneDNN (the module docstring says why; oneDNN rewrites float32
    graphs only). The model's facts come from the model when the learner is
    built, from the dataset when a config is checked."""
    if adapt_variables == "all" and batch_norm and float32 and runtime.onednn_enabled():
        raise ValueError(ONEDNN_MESSAGE)


ONEDNN_MESSAGE = (
    "meta_sgd with adapt_variables=all (batch norm adapting with per-element "
    "alpha) trips a TensorFlow oneDNN graph-rewrite bug: use "
    "--adapt_variables=all_but_norm, or set TF_ENABLE_ONEDNN_OPTS=0"
)


class MetaSGD(maml.MAML):
    """Meta-SGD over ``model``. ``meta_sgd_init``: "uniform" (the paper) or
    "constant" (``inner_lr`` everywhere). The inner optimizer must be SGD
    (``inner_lr``: alpha for "constant" only). Other arguments: ``MAML``.

    Attributes:
      alphas: alpha, one ``tf.Variable`` per adapted tensor of theta (its
        shape), in the order of ``self.inner.adapted``.
    """

    name = "meta_sgd"
    learned_step_sizes = True  # the inner loop takes alpha from step_learning_rates

    def __init__(
        self,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        meta_sgd_init: str = "uniform",
        adapt_variables: str = "all_but_norm",
        **kwargs,
    ):
        optimizer = inner_optimizer_from(
            kwargs.pop("inner_lr", None), kwargs.pop("inner_optimizer", None)
        )
        MetaSGD.check_arguments(meta_sgd_init=meta_sgd_init, inner_optimizer=optimizer)
        batch_norm = any(isinstance(layer, MetaBatchNorm) for layer in model.layers)
        float32 = model.trainable_variables[0].dtype == "float32"
        check_onednn(adapt_variables, batch_norm, float32)
        adapted = adapted_indices(model, adapt_variables)
        variables = model.trainable_variables
        values = initial_alphas(
            [tuple(variables[i].shape) for i in adapted],
            meta_sgd_init,
            optimizer.learning_rate,
            int(kwargs.get("seed", 0)),
        )
        self.alphas = [
            tf.Variable(value.astype(variables[i].dtype), name=f"alpha_{i}")
            for i, value in zip(adapted, values)
        ]
        self.meta_sgd_init = meta_sgd_init
        own = [*self.alphas, *kwargs.pop("own_variables", ())]
        super().__init__(
            model,
            outer_optimizer,
            inner_optimizer=optimizer,
            adapt_variables=adapt_variables,
            own_variables=own,
            **kwargs,
        )

    @staticmethod
    def check_arguments(*, meta_sgd_init, inner_optimizer, **_) -> None:
        """(``tfmeta.core.Learner.check_arguments``.)"""
        if meta_sgd_init not in INITS:
            raise ValueError(
                f"meta_sgd_init must be one of {INITS}, got {meta_sgd_init!r}"
            )
        if not isinstance(inner_optimizer, InnerSGD):
            raise ValueError(  # noqa: TRY004 (the binaries show ValueErrors as one line)
                "inner_optimizer must be sgd for meta_sgd (alpha scales SGD steps), "
                f"got {inner_optimizer.describe()['inner_optimizer']!r}"
            )

    def step_learning_rates(self, params, step) -> list[tf.Tensor]:
        """alpha (the same at every step), one tensor per adapted tensor, from
        ``params``: theta's copy, so the meta-gradient reaches it."""
        first = len(self.model.trainable_variables)
        return list(params[first : first + len(self.alphas)])

    def describe(self) -> dict[str, Any]:
        """The fixed ``inner_lr`` is unused: the served inner step uses alpha."""
        total = sum(float(tf.reduce_sum(a)) for a in self.alphas)
        size = sum(int(np.prod(a.shape)) for a in self.alphas)
        return {
            **super().describe(),
            "inner_lr": total / max(size, 1),  # the mean of alpha
            "inner_learning_rates": "meta_sgd: alpha per parameter, meta-learned",
        }


def check_config(config: Config) -> None:
    """The oneDNN rule before any model exists: the image datasets' conv4
    has batch norm and is float32."""
    batch_norm = config.get("dataset") in ("omniglot", "folder")
    check_onednn(config["adapt_variables"], batch_norm, float32=True)


ALGORITHM = Algorithm(
    name="meta_sgd",
    learner=MetaSGD,
    check=check_config,
    summary="Meta-SGD: learned per-parameter inner learning rates (Li et al. 2017)",
)
