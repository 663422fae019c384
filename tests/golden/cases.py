"""The golden cases: fixed data, and one builder per case.

A case is a learner configuration run on fixed synthetic episodes from fixed
initial parameters (both stored or generated here with numpy only). Two runs
are recorded per case (``tests/golden/generate.py``):

* float32: ``TRAIN_STEPS`` meta-train steps with the case's own outer
  optimizer; the outputs of every step, the parameters after the last step
  and the evaluation outputs on ``eval_episode``.
* float64: ``GRADIENT_STEPS`` meta-train steps with plain SGD at learning rate
  ``GRADIENT_LR`` (a power of two), so the combined meta-gradient that the
  outer optimizer applies is ``(theta_before - theta_after) / GRADIENT_LR``
  to float64 round-off; then the evaluation outputs.

Everything that depends on tfmeta's API is in the builders (``Runner`` and
the functions below it). The data (``episodes``), the initial parameters
(stored in ``values.json``) and the recorded values do not: when the API
changes, only the builders are rewritten, to the same configurations.

Builder contract: ``build(dtype, outer)`` returns a ``Runner`` for
``dtype`` "float32" or "float64"; ``outer="case"`` uses the case's outer
optimizer, ``outer="gradient"`` plain SGD with ``GRADIENT_LR`` (and, for LEO,
no gradient clipping, so the applied update is the meta-gradient itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import floatx  # Keras' float type (not tfmeta's API)

TRAIN_STEPS = 3
GRADIENT_STEPS = 2
GRADIENT_LR = 0.25  # a power of two: theta - lr * g and back are exact scalings


# --------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class Data:
    """Synthetic episodes: ``kind`` "images" (8x8x1, class prototypes plus
    noise), "sinusoid" (regression, ``[K, 1]``) or "embeddings" (clustered,
    L2-normalized vectors for LEO)."""

    kind: str
    tasks: int = 2  # meta-batch size
    n_way: int = 3
    k_shot: int = 2
    q_query: int = 2
    seed: int = 0


def _task(data: Data, rng: np.random.RandomState):
    """One task: support_x, support_y, query_x, query_y as float64 / int32 numpy."""
    n, k, q = data.n_way, data.k_shot, data.q_query
    if data.kind == "sinusoid":
        amplitude = rng.uniform(0.1, 5.0)
        phase = rng.uniform(0.0, np.pi)
        x = rng.uniform(-5.0, 5.0, size=(k + q, 1))
        y = amplitude * np.sin(x - phase)
        return x[:k], y[:k], x[k:], y[k:]
    if data.kind == "images":
        shape = (8, 8, 1)
        prototypes = rng.normal(size=(n, *shape))

        def draw(count):
            return np.repeat(prototypes, count, axis=0) + 0.8 * rng.normal(
                size=(n * count, *shape)
            )

    elif data.kind == "embeddings":
        dim = 6
        centers = rng.normal(size=(n, dim))

        def draw(count):
            x = np.repeat(centers, count, axis=0) + 0.5 * rng.normal(
                size=(n * count, dim)
            )
            return x / np.linalg.norm(x, axis=1, keepdims=True)

    else:
        raise ValueError(f"unknown data kind {data.kind!r}")
    support_x = draw(k)
    query_x = draw(q)
    labels = [np.repeat(np.arange(n), c).astype(np.int32) for c in (k, q)]
    return support_x, labels[0], query_x, labels[1]


def episodes(data: Data, count: int, offset: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``count`` meta-batches ``(support_x [B, ...], support_y, query_x,
    query_y)``; episode ``offset + i`` of the case's stream (numpy's legacy
    ``RandomState``, whose stream is fixed)."""
    out = []
    for index in range(offset, offset + count):
        rng = np.random.RandomState([data.seed, index])
        tasks = [_task(data, rng) for _ in range(data.tasks)]
        out.append(tuple(np.stack(parts) for parts in zip(*tasks)))
    return out


def train_episodes(data: Data, count: int) -> list[tuple[np.ndarray, ...]]:
    return episodes(data, count)


def eval_episode(data: Data) -> tuple[np.ndarray, ...]:
    return episodes(data, 1, offset=1000)[0]


# ----------------------------------------------------- builders (tfmeta API)


class Runner:
    """A built learner behind the calls the golden runs make."""

    def __init__(self, learner, dtype: str):
        self.learner = learner
        self.dtype = dtype

    def parameter_names(self) -> list[str]:
        return [v.path for v in self.learner.variables]

    def parameter_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(v.shape) for v in self.learner.variables]

    def get_parameters(self) -> list[np.ndarray]:
        return [np.array(v.numpy(), np.float64) for v in self.learner.variables]

    def set_parameters(self, values) -> None:
        variables = self.learner.variables
        if len(values) != len(variables):
            raise ValueError(f"{len(values)} values for {len(variables)} variables")
        for variable, value in zip(variables, values):
            value = np.asarray(value, np.float64)
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{variable.path}: {value.shape} for {variable.shape}")
            variable.assign(value.astype(self.dtype))

    def _episode(self, episode):
        sx, sy, qx, qy = episode
        regression = self.learner.problem == "regression"
        target = self.dtype if regression else tf.int32
        return (
            tf.constant(sx, self.dtype),
            tf.constant(sy, target),
            tf.constant(qx, self.dtype),
            tf.constant(qy, target),
        )

    def train_step(self, episode) -> dict[str, np.ndarray]:
        """One meta-train step: "loss", "metric", "meta_gradient_norm",
        "task_weights" ``[B]`` (and LEO's "kl", "encoder_penalty",
        "regularization", "objective")."""
        out = self.learner.meta_train_step(self._episode(episode))
        keys = ["loss", "meta_gradient_norm", "task_weights"]
        keys += [
            k
            for k in ("kl", "encoder_penalty", "regularization", "objective")
            if k in out
        ]
        values = {k: np.array(out[k].numpy(), np.float64) for k in keys}
        values["metric"] = np.array(out[self.learner.metric_name].numpy(), np.float64)
        return values

    def eval_step(self, episode) -> dict[str, np.ndarray]:
        """Per-task query "loss" and "metric" ``[B]`` after the evaluation inner loop."""
        out = self.learner.meta_eval_step(self._episode(episode))
        return {
            "loss": np.array(out["loss"].numpy(), np.float64),
            "metric": np.array(out[self.learner.metric_name].numpy(), np.float64),
        }


def _outer(outer: str, case_optimizer: Callable[[], keras.optimizers.Optimizer]):
    if outer == "gradient":
        return keras.optimizers.SGD(learning_rate=GRADIENT_LR)
    if outer == "case":
        return case_optimizer()
    raise ValueError(f"outer must be 'case' or 'gradient', got {outer!r}")


def _conv():
    from tfmeta.models import conv4

    return conv4(3, input_shape=(8, 8, 1), filters=4, depth=2, pooling="stride", seed=0)


def _mlp():
    from tfmeta.models import mlp

    return mlp(output_dim=1, input_dim=1, hidden=(10, 10), seed=0)


def _learner(cls, dtype, outer, model, case_optimizer, **kwargs) -> Runner:
    from tfmeta.core.fast_weight_learner import FastWeightLearner

    if issubclass(cls, FastWeightLearner):
        # The values come from the reference code's transductive batch norm.
        kwargs.setdefault("transductive", True)
    with floatx(dtype):
        learner = cls(model(), _outer(outer, case_optimizer), **kwargs)
    return Runner(learner, dtype)


def _maml(dtype, outer, model=_conv, lr=0.3, **kwargs) -> Runner:
    from tfmeta.algorithms import MAML

    return _learner(
        MAML,
        dtype,
        outer,
        model,
        lambda: keras.optimizers.SGD(learning_rate=lr),
        **kwargs,
    )


def maml_second_order(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.4, inner_steps=2, eval_inner_steps=3)


def maml_second_order_steps_1(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.4, inner_steps=2, second_order_steps=1)


def maml_recompute(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.3, inner_steps=3, recompute=True)


def maml_recompute_steps_1(dtype, outer):
    return _maml(
        dtype, outer, inner_lr=0.3, inner_steps=3, recompute=True, recompute_steps=1
    )


def maml_while_loop(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.3, inner_steps=3, unroll_inner_loop=False)


def maml_while_loop_recompute(dtype, outer):
    return _maml(
        dtype,
        outer,
        inner_lr=0.3,
        inner_steps=3,
        unroll_inner_loop=False,
        recompute=True,
    )


def maml_map_fn(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.4, inner_steps=2, task_execution="map_fn")


def maml_head(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.5, inner_steps=2, adapt_variables="head")


def maml_non_transductive(dtype, outer):
    return _maml(dtype, outer, inner_lr=0.4, inner_steps=2, transductive=False)


def maml_inner_adam(dtype, outer):
    from tfmeta.algorithms import InnerAdam

    return _maml(
        dtype,
        outer,
        model=_mlp,
        lr=0.01,
        inner_lr=0.05,
        inner_steps=2,
        problem="regression",
        inner_optimizer=InnerAdam(0.05, beta1=0.5, beta2=0.9),
    )


def maml_sinusoid(dtype, outer):
    return _maml(
        dtype,
        outer,
        model=_mlp,
        lr=0.01,
        inner_lr=0.02,
        inner_steps=2,
        eval_inner_steps=4,
        problem="regression",
    )


def fomaml(dtype, outer):
    from tfmeta.algorithms import FOMAML

    return _learner(
        FOMAML,
        dtype,
        outer,
        _conv,
        lambda: keras.optimizers.SGD(learning_rate=0.3),
        inner_lr=0.4,
        inner_steps=3,
    )


def maml_gradient_agreement(dtype, outer):
    return _maml(
        dtype, outer, inner_lr=0.4, inner_steps=2, task_weighting="gradient_agreement"
    )


def _reptile(dtype, outer, case_optimizer, **kwargs) -> Runner:
    from tfmeta.algorithms import Reptile

    class FixedOrderReptile(Reptile):
        """The values were written when every evaluated task used the
        learner's own seed for its mini-batch order; Reptile now seeds each
        task by its content (tests/algorithms/test_reptile.py). Pinning the
        old seed keeps everything else about evaluation checked here."""

        def adaptation_seed(self, support_x):
            del support_x
            return self.default_seed()

    return _learner(FixedOrderReptile, dtype, outer, _conv, case_optimizer, **kwargs)


def reptile(dtype, outer):
    from tfmeta.algorithms import annealed_outer_optimizer

    return _reptile(
        dtype,
        outer,
        lambda: annealed_outer_optimizer(
            0.8, num_steps=TRAIN_STEPS, final_step_size=0.2
        ),
        inner_lr=0.2,
        inner_steps=4,
        eval_inner_steps=5,
        inner_batch_size=4,
        eval_inner_batch_size=4,
        seed=7,
    )


def reptile_gradient_agreement(dtype, outer):
    return _reptile(
        dtype,
        outer,
        lambda: keras.optimizers.SGD(learning_rate=0.5),
        inner_lr=0.2,
        inner_steps=3,
        task_weighting="gradient_agreement",
    )


def _leo(dtype, outer, **kwargs) -> Runner:
    from tfmeta.algorithms import LEO
    from tfmeta.models import LEOModel

    settings = {"n_way": 3, "inner_steps": 2, "finetune_steps": 2}
    settings.update(kwargs)
    if outer == "gradient":
        settings.update(gradient_clip_value=None, gradient_clip_variable_norm=None)
    with floatx(dtype):
        model = LEOModel(6, num_latents=3, inner_lr=1.0, finetune_lr=0.1, seed=0)
        optimizer = _outer(outer, lambda: keras.optimizers.SGD(learning_rate=0.5))
        learner = LEO(model, optimizer, **settings)
    return Runner(learner, dtype)


def leo_deterministic(dtype, outer):
    return _leo(
        dtype,
        outer,
        deterministic=True,
        dropout_rate=0.0,
        l2_penalty_weight=1e-3,
        orthogonality_penalty_weight=1e-2,
        gradient_clip_value=0.5,
        gradient_clip_variable_norm=1.0,
    )


def leo_sampling(dtype, outer):
    return _leo(
        dtype,
        outer,
        deterministic=False,
        dropout_rate=0.3,
        kl_estimator="sample",
        kl_weight=0.1,
        encoder_penalty_weight=0.1,
        l2_penalty_weight=1e-3,
        orthogonality_penalty_weight=1e-2,
        gradient_clip_value=0.5,
        gradient_clip_variable_norm=1.0,
        seed=5,
    )


# ------------------------------------------------------------------- cases
@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[[str, str], Runner]
    data: Data
    description: str


IMAGES = Data("images", seed=1)
IMAGES3 = Data("images", tasks=3, seed=2)  # Gradient Agreement: three tasks
SINUSOID = Data("sinusoid", k_shot=5, q_query=5, seed=3)
EMBEDDINGS = Data("embeddings", seed=4)

CASES: dict[str, Case] = {
    "maml_second_order": Case(
        maml_second_order,
        IMAGES,
        "MAML, second order through 2 inner steps on one tape",
    ),
    "maml_second_order_steps_1": Case(
        maml_second_order_steps_1,
        IMAGES,
        "MAML, 2 inner steps, second order through the last one only",
    ),
    "maml_recompute": Case(
        maml_recompute, IMAGES, "MAML, 3 inner steps, activations recomputed (unrolled)"
    ),
    "maml_recompute_steps_1": Case(
        maml_recompute_steps_1,
        IMAGES,
        "MAML, 3 inner steps, the first step's activations recomputed",
    ),
    "maml_while_loop": Case(
        maml_while_loop, IMAGES, "MAML, 3 inner steps in a differentiated tf.while_loop"
    ),
    "maml_while_loop_recompute": Case(
        maml_while_loop_recompute,
        IMAGES,
        "MAML, 3 inner steps, recomputing forward and reverse tf.while_loops",
    ),
    "maml_map_fn": Case(maml_map_fn, IMAGES, "MAML with the tasks run by tf.map_fn"),
    "maml_head": Case(maml_head, IMAGES, "MAML adapting only the head (ANIL)"),
    "maml_non_transductive": Case(
        maml_non_transductive,
        IMAGES,
        "MAML, queries normalized with the support set's batch-norm statistics",
    ),
    "maml_inner_adam": Case(
        maml_inner_adam, SINUSOID, "MAML with inner Adam, sinusoid regression, MLP"
    ),
    "maml_sinusoid": Case(
        maml_sinusoid, SINUSOID, "MAML, sinusoid regression, MLP, inner SGD"
    ),
    "fomaml": Case(fomaml, IMAGES, "first-order MAML, 3 inner steps"),
    "reptile": Case(
        reptile,
        IMAGES,
        "Reptile, inner mini-batches of 4 of 6, annealed outer SGD",
    ),
    "maml_gradient_agreement": Case(
        maml_gradient_agreement, IMAGES3, "MAML with Gradient Agreement weights"
    ),
    "reptile_gradient_agreement": Case(
        reptile_gradient_agreement, IMAGES3, "Reptile with Gradient Agreement weights"
    ),
    "leo_deterministic": Case(
        leo_deterministic, EMBEDDINGS, "LEO without sampling or dropout, clipped"
    ),
    "leo_sampling": Case(
        leo_sampling,
        EMBEDDINGS,
        "LEO with seeded sampling, dropout and the one-sample KL, clipped",
    ),
}


# ------------------------------------------------- the runs (API-independent)
def initial_parameters(names, shapes, seed: int) -> list[np.ndarray]:
    """Initial values drawn with numpy (not Keras' initializers): Glorot-uniform
    kernels, small random biases and batch-norm offsets, scales near one, LEO's
    learning rates near their reference values. Used once, by ``generate.py``;
    the values are then stored."""
    rng = np.random.RandomState([seed, 12345])
    values = []
    for name, shape in zip(names, shapes):
        leaf = name.rsplit("/", 1)[-1]
        if leaf == "kernel":
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            values.append(rng.uniform(-limit, limit, size=shape))
        elif leaf in ("bias", "beta"):
            values.append(0.1 * rng.normal(size=shape))
        elif leaf in ("gamma", "inner_lr"):
            values.append(1.0 + 0.1 * rng.normal(size=shape))
        elif leaf == "finetune_lr":
            values.append(0.1 * (1.0 + 0.1 * rng.normal(size=shape)))
        else:
            raise ValueError(f"no initial values for variable {name!r}")
    return values


def float32_run(case: Case, initial) -> dict:
    """``TRAIN_STEPS`` steps in float32 with the case's outer optimizer."""
    runner = case.build("float32", "case")
    runner.set_parameters(initial)
    steps = [runner.train_step(e) for e in train_episodes(case.data, TRAIN_STEPS)]
    return {
        "shapes": runner.parameter_shapes(),
        "steps": steps,
        "parameters": runner.get_parameters(),
        "eval": runner.eval_step(eval_episode(case.data)),
    }


def float64_run(case: Case, initial) -> dict:
    """``GRADIENT_STEPS`` steps in float64 with SGD at ``GRADIENT_LR``: the
    combined meta-gradient of each step, the step's outputs, then evaluation."""
    runner = case.build("float64", "gradient")
    runner.set_parameters(initial)
    gradients, steps = [], []
    for episode in train_episodes(case.data, GRADIENT_STEPS):
        before = runner.get_parameters()
        steps.append(runner.train_step(episode))
        after = runner.get_parameters()
        gradients.append([(b - a) / GRADIENT_LR for b, a in zip(before, after)])
    return {
        "shapes": runner.parameter_shapes(),
        "meta_gradients": gradients,
        "steps": steps,
        "eval": runner.eval_step(eval_episode(case.data)),
    }
