"""What every meta-learner answers, and the capabilities it declares.

Notation (Finn et al. 2017): theta are the meta-parameters (the model's
trainable variables and any the learner owns, e.g. learned inner learning
rates), theta'_i what adapting to task i gives, beta the outer learning rate
held by the outer Keras optimizer.

A learner says, for one task, what its result is (``task_result``: the
meta-gradient, the query loss and metric, theta'_i where update vectors are
defined) and how it is evaluated (``eval_task``); what "adapted" is
(``adapt``) and how it predicts (``predict``); and what an export serves
(``serving_functions``, ``describe``). ``MetaStep`` runs the meta-batch. A
learner declares what it supports (``task_weightings``, ``task_executions``,
``distributable``), so that callers check a setting before any work starts
instead of testing the learner's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tfmeta.core import weighting
from tfmeta.core.ensemble import mean_probability_logits
from tfmeta.core.executor import (
    TASK_EXECUTIONS,
    MetaStep,
    TaskResult,
    check_task_execution,
)
from tfmeta.core.inner_loop import check_inner_step_bound
from tfmeta.core.problem import Problem


def check_inner_steps(inner_steps: int, eval_inner_steps: int | None) -> None:
    if inner_steps < 0 or (eval_inner_steps is not None and eval_inner_steps < 0):
        raise ValueError(
            f"inner_steps and eval_inner_steps must be >= 0, got {inner_steps} and "
            f"{eval_inner_steps}"
        )


def _tensor(variable):
    """The value of a Keras variable, or a ``tf.Variable`` itself."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class Learner:
    """Base of every learner: theta, the outer optimizer and the meta-steps.

    Args:
      model: a built Keras 3 model, called only through ``stateless_call``.
      outer_optimizer: applies the combined meta-gradient (beta: its rate).
      problem: "classification" or "regression" (``Problem``).
      inner_steps / eval_inner_steps: adaptation steps in meta-training and
        at meta-validation/test (default: ``inner_steps``).
      task_weighting, task_execution, jit_compile: see ``MetaStep``.
      seed: seeds randomness inside the steps.
      own_variables: meta-parameters the learner owns besides the model's
        (meta-learned with them, checkpointed with them).
      state_variables: state the learner keeps that is not meta-learned
        (e.g. running statistics): updated by ``update_state`` after each
        outer update, checkpointed and exported with theta.
      support_copies / support_augment: at evaluation and serving, adapt to
        the support set joined by this many distorted copies of it, affine
        maps of this strength (``tfmeta.data.augment.with_support_copies``;
        images only; 0: none). Meta-training is not changed.
      query_copies / query_augment: the same for each query, its answer the
        mean of its copies' class probabilities (classification only).
    """

    name = "learner"
    task_weightings: tuple[str, ...] = weighting.TASK_WEIGHTINGS
    task_executions: tuple[str, ...] = TASK_EXECUTIONS
    distributable = True
    extra_metrics: tuple[str, ...] = ()  # names of TaskResult.extras

    def __init__(
        self,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        *,
        problem: str = "classification",
        inner_steps: int = 1,
        eval_inner_steps: int | None = None,
        task_weighting: str = "uniform",
        task_execution: str = "loop",
        jit_compile: bool = False,
        seed: int = 0,
        own_variables: Sequence[tf.Variable] = (),
        state_variables: Sequence[tf.Variable] = (),
        support_copies: int = 0,
        support_augment: float = 1.0,
        query_copies: int = 0,
        query_augment: float = 1.0,
    ):
        if not model.built or not model.trainable_variables:
            raise ValueError(
                "model must be built and have trainable variables (call it once or give an Input)"
            )
        Learner.check_arguments(
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            support_copies=support_copies,
            support_augment=support_augment,
            query_copies=query_copies,
            query_augment=query_augment,
        )
        for kind, copies in (("support", support_copies), ("query", query_copies)):
            if copies and len(model.input_shape) != 4:
                raise ValueError(
                    f"{kind}_copies={copies} distorts images, but the model takes "
                    f"inputs of shape {tuple(model.input_shape[1:])}"
                )
        if query_copies and problem != "classification":
            raise ValueError(
                f"query_copies={query_copies} averages class probabilities; "
                f"a {problem} learner has none"
            )
        self.check_capabilities(task_weighting, task_execution)
        self.model = model
        self.outer_optimizer = outer_optimizer
        self.problem = problem  # "classification" or "regression"
        self.objective = Problem(problem)  # its loss and metric
        self.inner_steps = inner_steps
        self.eval_inner_steps = (
            inner_steps if eval_inner_steps is None else eval_inner_steps
        )
        self.seed = seed
        self.support_copies = support_copies
        self.support_augment = support_augment
        self.query_copies = query_copies
        self.query_augment = query_augment
        self.own_variables = list(own_variables)
        self.variables = list(model.trainable_variables) + self.own_variables
        self.state_variables = list(state_variables)
        self.outer_optimizer.build(self.variables)
        self.meta_step = MetaStep(
            self,
            task_weighting=task_weighting,
            task_execution=task_execution,
            jit_compile=jit_compile,
            seed=seed,
        )

    @staticmethod
    def check_arguments(
        *,
        inner_steps: int,
        eval_inner_steps: int | None,
        support_copies: int = 0,
        support_augment: float = 1.0,
        query_copies: int = 0,
        query_augment: float = 1.0,
        **_,
    ) -> None:
        """Raises ValueError naming a bad argument of this class's own. Each
        learner class checks the arguments it adds in a ``check_arguments``
        of its own, run by its constructor and, for a config, by
        ``Algorithm.check_config`` (``**_``: the other classes' arguments)."""
        from tfmeta.data.augment import check_copies  # data imports core

        check_copies("support", support_copies, support_augment)
        check_copies("query", query_copies, query_augment)
        check_inner_steps(inner_steps, eval_inner_steps)
        check_inner_step_bound("inner_steps", inner_steps)
        if eval_inner_steps is not None:
            check_inner_step_bound("eval_inner_steps", eval_inner_steps)

    @classmethod
    def check_capabilities(
        cls,
        task_weighting: str = "uniform",
        task_execution: str = "loop",
        replicas: int | None = None,
    ) -> None:
        """Raises ValueError, naming the parameter, for a setting this learner
        does not support (``replicas``: None reads the current strategy)."""
        weighting.check_task_weighting(task_weighting)
        check_task_execution(task_execution)
        if task_weighting not in cls.task_weightings:
            raise ValueError(
                f"{cls.name} supports task_weighting {list(cls.task_weightings)}, "
                f"got {task_weighting!r}"
            )
        if task_execution not in cls.task_executions:
            raise ValueError(
                f"{cls.name} supports task_execution {list(cls.task_executions)}, "
                f"got {task_execution!r}"
            )
        if replicas is None:
            distributed = tf.distribute.has_strategy()
        else:
            distributed = replicas > 1
        if distributed and not cls.distributable:
            raise ValueError(
                f"{cls.name} runs on one device: build it outside a tf.distribute "
                "strategy with more than one replica"
            )

    # ------------------------------------------------------------ theta
    @property
    def saved_variables(self) -> list[tf.Variable]:
        """What a checkpoint and an export hold besides the model's
        variables: the learner's own meta-parameters, then its state."""
        return self.own_variables + self.state_variables

    def update_state(self, statistics: list[tf.Tensor]) -> None:
        """Folds the meta-batch's mean observations (``TaskResult.statistics``,
        aligned with ``state_variables``) into the state, after the outer
        update; learners without state have none to give."""
        del statistics

    def parameters(self) -> list[tf.Tensor]:
        """theta as tensors (a snapshot read of ``variables``)."""
        return [tf.identity(_tensor(v)) for v in self.variables]

    def loss(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """The problem's loss (``Problem.loss``)."""
        return self.objective.loss(outputs, y)

    def metric(self, outputs: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """The problem's metric (``Problem.metric``)."""
        return self.objective.metric(outputs, y)

    @property
    def metric_name(self) -> str:
        return self.objective.metric_name

    @property
    def task_weighting(self) -> str:
        return self.meta_step.task_weighting

    @property
    def task_execution(self) -> str:
        return self.meta_step.task_execution

    @property
    def distributed(self) -> bool:
        """Whether the meta-batch is split over the replicas of a strategy."""
        return self.meta_step.distributed

    @property
    def jit_compile(self) -> bool:
        return self.meta_step.jit_compile

    # ------------------------------------------------ what a learner says
    def task_result(
        self, support_x, support_y, query_x, query_y, task_seed
    ) -> TaskResult:
        """One task of a meta-train step (inside the compiled step)."""
        raise NotImplementedError

    def query_outputs(self, support_x, support_y, query_x, steps: int) -> tf.Tensor:
        """Outputs for ``query_x`` after adapting to the support set with
        ``steps`` adaptation steps, as served (``adapt``, then ``predict``)."""
        raise NotImplementedError

    def eval_task(self, support_x, support_y, query_x, query_y, steps: int):
        """(query loss, query metric, query outputs) of one task after
        ``steps`` adaptation steps, as served (``served_outputs``): the
        metric is computed from the very outputs returned."""
        outputs = self.served_outputs(support_x, support_y, query_x, steps)
        return self.loss(outputs, query_y), self.metric(outputs, query_y), outputs

    def served_outputs(
        self, support_x, support_y, query_x, steps: int | None = None
    ) -> tf.Tensor:
        """``query_outputs`` after ``steps`` (default ``eval_inner_steps``) on
        the support set with its ``support_copies``, each query answered with
        the mean class probabilities of its ``query_copies`` (logits: their
        log): what evaluation reports and an export answers."""
        from tfmeta.data.augment import distorted_copies, with_support_copies

        support_x, support_y = with_support_copies(
            support_x, support_y, self.support_copies, self.support_augment
        )
        steps = self.eval_inner_steps if steps is None else steps
        if not self.query_copies:
            return self.query_outputs(support_x, support_y, query_x, steps)
        copies = distorted_copies(query_x, self.query_copies, self.query_augment)
        outputs = self.query_outputs(support_x, support_y, copies, steps)
        return mean_probability_logits(tf.split(outputs, self.query_copies + 1))

    def adapt(self, support_x, support_y, inner_steps: int | None = None):
        """What adapting to one task gives (no variable changes)."""
        raise NotImplementedError

    def predict(self, adapted, query_x, support_x=None) -> tf.Tensor:
        """Outputs for ``query_x`` under ``adapted``."""
        raise NotImplementedError

    def outer_gradient(self, meta_gradient: list, outputs: dict) -> tuple[list, list]:
        """(the meta-gradient whose norm is reported, the gradient applied).
        ``outputs``: the step's averaged outputs, to which a learner may add."""
        return meta_gradient, meta_gradient

    def serving_functions(self, preprocessing=None) -> dict[str, Any]:
        """``{signature name: tf.function}`` an export writes."""
        raise NotImplementedError(f"{self.name} has no serving functions")

    def describe(self) -> dict[str, Any]:
        """What a client of an export needs to know of the adaptation it runs."""
        values = {"algorithm": self.name, "problem": self.problem}
        for kind in ("support", "query"):
            if getattr(self, f"{kind}_copies"):
                values[f"{kind}_copies"] = int(getattr(self, f"{kind}_copies"))
                values[f"{kind}_augment"] = float(getattr(self, f"{kind}_augment"))
        return values

    # ---------------------------------------------------- the meta-steps
    def meta_train_step(self, episode) -> dict[str, tf.Tensor]:
        """One outer update of theta from a batch of tasks.

        ``episode`` = (support_x ``[B, N*K, ...]``, support_y ``[B, N*K]``,
        query_x ``[B, N*Q, ...]``, query_y ``[B, N*Q]``). Returns scalars "loss",
        the metric ("accuracy" or "mse", post-adaptation, on the query sets),
        "meta_gradient_norm", the per-task "task_weights" ``[B]`` and any
        ``extra_metrics``.
        """
        check_labels(self.problem, episode)
        return self.meta_step.train(episode)

    def meta_eval_step(
        self, episode, inner_steps: int | None = None
    ) -> dict[str, tf.Tensor]:
        """Per-task query loss and metric ``[B]`` and query outputs ``[B,
        n_query, ...]`` ("outputs") after ``eval_inner_steps`` (or
        ``inner_steps``)."""
        check_labels(self.problem, episode)
        steps = self.eval_inner_steps if inner_steps is None else inner_steps
        return self.meta_step.evaluate(episode, steps)

    @property
    def train_tracing_count(self) -> int:
        return self.meta_step.train_tracing_count


def check_labels(problem: str, episode) -> None:
    """Refuses, in one line naming the ``problem`` argument, labels of the
    other kind: classification takes integer labels ``[tasks, examples]``,
    regression float targets ``[tasks, examples, d]`` (a sinusoid episode
    given to a classifier otherwise fails deep inside the loss). Static
    dtypes and ranks only: free inside a traced step; values it cannot read
    (a distributed episode's per-replica values) are left to the step."""
    labels = episode[1] if isinstance(episode, (tuple, list)) else None
    dtype, shape = getattr(labels, "dtype", None), getattr(labels, "shape", None)
    if dtype is None or shape is None or len(shape) == 0:
        return
    dtype = tf.as_dtype(dtype)
    if problem == "classification" and not dtype.is_integer:
        raise ValueError(
            f"problem='classification' takes integer class labels [tasks, examples]; "
            f"the episode's support_y is {dtype.name} {list(shape)}: for regression "
            "targets build the learner with problem='regression'"
        )
    if problem == "regression" and dtype.is_integer:
        raise ValueError(
            f"problem='regression' takes float targets [tasks, examples, d]; the "
            f"episode's support_y is {dtype.name} {list(shape)}: for class labels "
            "build the learner with problem='classification'"
        )
