"""What an algorithm module declares, so that binaries, trainer and export
need no knowledge of any one algorithm.

An algorithm module ends with one ``Algorithm`` per name it offers: its
name, its learner class and a summary line. The config plumbing is generated
from the learner's constructor: every keyword argument is a config key of
the same name with the constructor's default (``Algorithm.defaults``), and
building the learner passes each key's value to its argument
(``Algorithm.build``). A small explicit mapping covers the arguments a
config gives otherwise: ``problem`` (from the dataset), ``inner_optimizer``
(from the keys ``inner_optimizer``, ``inner_lr`` and ``inner_beta1``) and
an algorithm's own ``conversions`` (e.g. MAML++'s schedules as fractions of
the run). Checking a config forms those arguments and runs the checks the
constructor runs: each learner class has a ``check_arguments`` of the
arguments it adds, called by its constructor and, for a config, by
``Algorithm.check_config`` along the class's bases. ``registry`` maps names
to algorithms.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfmeta.checks import check_finite
from tfmeta.core.learner import Learner

Config = Mapping[str, Any]

# Constructor arguments that are never config keys: what the builder is
# given, what a learner makes for itself, and callables.
NOT_KEYS = ("self", "model", "outer_optimizer", "own_variables", "state_variables")
NOT_KEYS += ("inner_loss", "inner_lr")  # alpha reaches a learner in inner_optimizer


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A constructor argument formed from config keys: ``keys`` (with their
    defaults) are what it reads, ``value(config)`` the argument."""

    keys: Mapping[str, Any]
    value: Callable[[Config], Any]


def _inner_optimizer(config: Config):
    from tfmeta.core.inner_optimizers import make_inner_optimizer  # it checks alpha

    name = config["inner_optimizer"]
    extra = {"beta1": config["inner_beta1"]} if name == "adam" else {}
    return make_inner_optimizer(name, config["inner_lr"], **extra)


# Arguments a config gives by other keys, shared by every algorithm.
CONVERSIONS: dict[str, Conversion] = {
    "inner_optimizer": Conversion(
        # alpha; inner Adam's beta1 (Reptile: 0)
        {"inner_lr": 0.4, "inner_optimizer": "sgd", "inner_beta1": 0.0},
        _inner_optimizer,
    ),
}


def keyword_parameters(function: Callable) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``function`` (a class: its constructor)."""
    return {
        p.name: p
        for p in inspect.signature(function).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.name not in NOT_KEYS
    }


def keyword_defaults(function: Callable, exclude: tuple[str, ...] = ()) -> dict:
    """The keyword parameters of ``function`` that have defaults, by name."""
    return {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.default is not p.empty and p.name not in exclude
    }


def constructor_parameters(learner: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``learner(model, outer_optimizer, ...)`` takes:
    its constructor's, then its bases' while a constructor passes
    ``**kwargs`` on (a subclass's default first)."""
    parameters: dict[str, inspect.Parameter] = {}
    for cls in learner.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        for name, parameter in keyword_parameters(vars(cls)["__init__"]).items():
            parameters.setdefault(name, parameter)
        kinds = [p.kind for p in inspect.signature(cls.__init__).parameters.values()]
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            break
    return parameters


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """One algorithm as the rest of tfmeta sees it.

    Attributes:
      name: its name in configs and on the command line.
      learner: the learner class (its ``task_weightings``,
        ``task_executions`` and ``distributable`` are the capabilities).
      summary: one line for listings.
      model: the kind of model it needs (``tfmeta.models`` factory name), or
        None for the data's default network.
      exclude: constructor arguments that are not its config keys (no
        default, no flag of its own; the constructor's default holds), though
        a value a config holds anyway (a key common to several algorithms,
        e.g. ``recompute`` for fomaml) still reaches the constructor and its
        checks, so that a setting it cannot use is refused, not ignored.
      conversions: arguments formed from config keys of another name or
        kind, besides ``CONVERSIONS``.
      parameters: where the arguments come from, when not the learner's
        constructor (LEO's settings dataclass).
      model_keys: config keys its model reads (not learner arguments), with
        their defaults; ``check`` checks them.
      check: ``check(config)``, the rules of config keys that are no
        learner argument (the model's, run-length fractions, ...).
    """

    name: str
    learner: type[Learner]
    summary: str = ""
    model: str | None = None
    exclude: tuple[str, ...] = ()
    conversions: Mapping[str, Conversion] = dataclasses.field(default_factory=dict)
    parameters: tuple[Callable, ...] = ()
    model_keys: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    check: Callable[[Config], None] | None = None

    def arguments_from(self) -> dict[str, inspect.Parameter]:
        """The learner's keyword arguments that a config gives."""
        if self.parameters:
            found = {}
            for function in self.parameters:
                found.update(keyword_parameters(function))
        else:
            found = constructor_parameters(self.learner)
        return found

    def conversion(self, name: str) -> Conversion | None:
        return self.conversions.get(name) or CONVERSIONS.get(name)

    @property
    def defaults(self) -> dict[str, Any]:
        """The config keys it owns and their defaults (each a flag of the
        binaries): the constructor's, a conversion's keys, the model's keys."""
        values: dict[str, Any] = {}
        for name, parameter in self.arguments_from().items():
            if name in self.exclude:
                continue
            conversion = self.conversion(name)
            if conversion is not None:
                values.update(conversion.keys)
            elif name != "problem" and parameter.default is not parameter.empty:
                values[name] = parameter.default
        values.update(self.model_keys)
        return values

    def arguments(self, config: Config, problem: str) -> dict[str, Any]:
        """The learner's keyword arguments from a resolved config (a required
        argument, such as LEO's ``n_way``, is read from the common keys)."""
        arguments = {}
        for name in self.arguments_from():
            conversion = self.conversion(name)
            if name in self.exclude:
                if name in config:  # a common key: refused if it cannot apply
                    arguments[name] = config[name]
            elif name == "problem":
                arguments[name] = problem
            elif conversion is not None:
                arguments[name] = conversion.value(config)
            else:
                arguments[name] = config[name]
        return arguments

    def check_config(self, config: Config, problem: str) -> None:
        """Every rule on the keys this algorithm reads, before any model or
        data exists: its capabilities on one device (the binary checks the
        replicas of its strategy), the arguments it would build the learner
        with through the checks its constructors run, then ``check``."""
        self.learner.check_capabilities(
            config.get("task_weighting", "uniform"),
            config.get("task_execution", "loop"),
            replicas=1,
        )
        arguments = {}  # every class's defaults, then the config's values
        for cls in self.learner.__mro__:
            if "__init__" in vars(cls) and cls is not object:
                for name, parameter in keyword_parameters(cls.__init__).items():
                    if parameter.default is not parameter.empty:
                        arguments.setdefault(name, parameter.default)
        arguments.update(self.arguments(config, problem))
        for cls in reversed(self.learner.__mro__):
            if "check_arguments" in vars(cls):
                vars(cls)["check_arguments"](**arguments)
        if self.check is not None:
            self.check(config)

    def build(
        self,
        config: Config,
        model: keras.Model,
        outer_optimizer: keras.optimizers.Optimizer,
        problem: str,
    ) -> Learner:
        """The learner of a resolved config around ``model``."""
        arguments = self.arguments(config, problem)
        return self.learner(model, outer_optimizer, **arguments)


def run_steps(name: str, value, num_steps: int) -> int:
    """A schedule length in meta-steps: an int >= 0 is steps, a float in
    [0, 1) a fraction of the run (``num_steps``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(  # noqa: TRY004 (the binaries show ValueErrors as one line)
            f"{name} must be a number of steps or a fraction, got {value!r}"
        )
    check_finite(name, value)
    if isinstance(value, float) and 0.0 <= value < 1.0:
        return round(value * num_steps)
    if value < 0 or value != int(value):
        raise ValueError(
            f"{name} must be an integer >= 0 (steps) or a fraction in [0, 1), got {value!r}"
        )
    return int(value)


def run_fraction(name: str, default: float, minimum: int = 0) -> Conversion:
    """The config key ``name``, a number of meta-steps or a fraction of the
    run (``run_steps``), as a learner argument in steps (at least ``minimum``)."""

    def steps(config: Config) -> int:
        num_steps = int(config.get("schedule_steps") or config["num_steps"])
        return max(run_steps(name, config[name], num_steps), minimum)

    return Conversion({name: default}, steps)
