"""The config keys every fast-weight learner reads, their checks and the
learner arguments they give (shared by MAML, FOMAML and Reptile)."""

from __future__ import annotations

from typing import Any

from tfmeta.core.algorithm import Config, check_finite
from tfmeta.core.inner_loop import check_adapt_variables, check_inner_step_bound
from tfmeta.core.inner_optimizers import make_inner_optimizer
from tfmeta.core.learner import check_inner_steps

INNER_OPTIMIZERS = ("sgd", "adam")

DEFAULTS: dict[str, Any] = {
    "inner_lr": 0.4,  # alpha
    "inner_steps": 1,
    "eval_inner_steps": 3,
    "inner_optimizer": "sgd",
    "inner_beta1": 0.0,  # inner Adam's beta1 (Reptile: 0)
    "adapt_variables": "all",
    "transductive": False,  # train as served: queries by the support set's statistics
    "unroll_inner_loop": True,
    "task_weighting": "uniform",
    "task_execution": "loop",
    "jit_compile": False,
}


def check(config: Config) -> None:
    """Raises ValueError naming the first bad shared key."""
    check_finite("inner_lr", config["inner_lr"], positive=True)
    check_inner_steps(int(config["inner_steps"]), int(config["eval_inner_steps"]))
    for name in ("inner_steps", "eval_inner_steps"):
        check_inner_step_bound(name, int(config[name]))
    if config["inner_optimizer"] not in INNER_OPTIMIZERS:
        raise ValueError(
            f"inner_optimizer must be one of {INNER_OPTIMIZERS}, got "
            f"{config['inner_optimizer']!r}"
        )
    if config["inner_optimizer"] == "adam":
        check_finite("inner_beta1", config["inner_beta1"])
        if not 0.0 <= config["inner_beta1"] < 1.0:
            raise ValueError(
                f"inner_beta1 must be in [0, 1), got {config['inner_beta1']}"
            )
    check_adapt_variables(config["adapt_variables"])
    # task_weighting and task_execution: the learner's capabilities
    # (``Algorithm.check_config``).


def learner_arguments(config: Config, problem: str) -> dict[str, Any]:
    """``FastWeightLearner`` keyword arguments from a resolved config."""
    name = config["inner_optimizer"]
    extra = {"beta1": config["inner_beta1"]} if name == "adam" else {}
    return {
        "inner_optimizer": make_inner_optimizer(name, config["inner_lr"], **extra),
        "inner_steps": int(config["inner_steps"]),
        "eval_inner_steps": int(config["eval_inner_steps"]),
        "problem": problem,
        "adapt_variables": config["adapt_variables"],
        "transductive": bool(config["transductive"]),
        "task_weighting": config["task_weighting"],
        "jit_compile": bool(config["jit_compile"]),
        "task_execution": config["task_execution"],
        "unroll_inner_loop": bool(config["unroll_inner_loop"]),
        "seed": int(config["seed"]),
    }
