"""What every learner shares and no learner owns: the stateless forward,
loss and metric over fast weights, the inner loop and inner optimizers, the
ways of forming a meta-gradient, the meta-step executor, and ensembles of
trained learners."""

from tfmeta.core.algorithm import Algorithm
from tfmeta.core.ensemble import Ensemble
from tfmeta.core.executor import TASK_EXECUTIONS, MetaStep, TaskResult
from tfmeta.core.fast_weight_learner import FastWeightLearner
from tfmeta.core.inner_loop import InnerLoop, SupportTask
from tfmeta.core.inner_optimizers import InnerAdam, InnerSGD, make_inner_optimizer
from tfmeta.core.learner import Learner
from tfmeta.core.outer_optimizers import annealed_outer_optimizer, make_outer_optimizer
from tfmeta.core.problem import Problem
from tfmeta.core.second_order import MetaGradient

__all__ = [
    "TASK_EXECUTIONS",
    "Algorithm",
    "Ensemble",
    "FastWeightLearner",
    "InnerAdam",
    "InnerLoop",
    "InnerSGD",
    "Learner",
    "MetaGradient",
    "MetaStep",
    "Problem",
    "SupportTask",
    "TaskResult",
    "annealed_outer_optimizer",
    "make_inner_optimizer",
    "make_outer_optimizer",
]
