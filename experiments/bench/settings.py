"""What the benchmark's processes are told: the settings of one timed
configuration (``Settings``, passed to every worker as flags) and the
driver's own options (``Options``). No TensorFlow here."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from . import yardstick

MODES = ("speed", "memory", "flops")
XLA_SETTINGS = ("off", "on")


@dataclasses.dataclass(frozen=True)
class Settings:
    """One configuration's settings; None: the algorithm's own default."""

    meta_batch_size: int = 32
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 1
    inner_steps: int = 1
    inner_lr: float | None = None
    filters: int = yardstick.FILTERS
    embedding_dim: int = 256
    steps: int = 10
    threads: int = 0
    cpu_threading: str = "auto"
    malloc_arenas: str = "cores"
    task_execution: str = "loop"
    unroll_inner_loop: bool = True
    fused_batch_norm: bool = True
    recompute: bool = False
    recompute_steps: int | None = None
    jit_compile: bool = False

    @classmethod
    def from_flags(cls, flag_values: Any) -> Settings:
        fields = dataclasses.fields(cls)
        return cls(**{field.name: getattr(flag_values, field.name) for field in fields})

    def to_args(self) -> list[str]:
        """The flags that give a worker these settings (None: not passed)."""
        return [
            f"--{name}={value}"
            for name, value in dataclasses.asdict(self).items()
            if value is not None
        ]

    def check(self) -> None:
        """ValueError for a count out of range (the algorithms check the rest)."""
        for name in ("meta_batch_size", "n_way", "k_shot", "q_query", "filters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("inner_steps", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.embedding_dim < 1:
            raise ValueError(f"--embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")

    def recompute_label(self) -> str:
        if not self.recompute:
            return "off"
        if self.recompute_steps is None:
            return "on"
        return f"on, first {self.recompute_steps} step(s)"


@dataclasses.dataclass(frozen=True)
class Options:
    """The driver's: what to time, beside what, how often, where to write."""

    algorithms: tuple[str, ...] = ()  # empty: every registered algorithm
    xla: tuple[str, ...] = XLA_SETTINGS
    repeats: int = 2
    mode: str = "speed"
    memory_inner_steps: tuple[str, ...] = ("5", "10", "25")
    torch_python: str | None = None
    yardstick: str = ""  # the MAML script
    protonet_yardstick: str = ""
    output_json: str | None = None

    @classmethod
    def from_flags(cls, flag_values: Any) -> Options:
        values = {
            field.name: getattr(flag_values, field.name)
            for field in dataclasses.fields(cls)
        }
        for name in ("algorithms", "xla", "memory_inner_steps"):
            values[name] = tuple(values[name] or ())
        return cls(**values)

    def check(self, settings: Settings) -> None:
        """ValueError for options that cannot work, before any process starts."""
        if self.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {self.repeats}")
        if set(self.xla) - set(XLA_SETTINGS) or not self.xla:
            raise ValueError(f"--xla must be among {XLA_SETTINGS}, got {self.xla}")
        if self.output_json:
            folder = os.path.dirname(os.path.abspath(self.output_json))
            if os.path.isdir(self.output_json) or not os.path.isdir(folder):
                raise ValueError(
                    f"--output_json={self.output_json}: not a file in an existing folder"
                )
            if not os.access(folder, os.W_OK):
                raise ValueError(
                    f"--output_json={self.output_json}: {folder} is not writable"
                )
        if not self.torch_python:
            return
        if not os.access(self.torch_python, os.X_OK):
            raise ValueError(f"--torch_python={self.torch_python} is not an executable")
        sticks = yardstick.yardsticks_of(self.algorithms)
        for flag in dict.fromkeys(stick.script_flag for stick in sticks):
            if not os.path.isfile(getattr(self, flag)):
                raise ValueError(f"--{flag}={getattr(self, flag)} does not exist")
        if settings.filters != yardstick.FILTERS:
            raise ValueError(
                f"the yardstick's network has {yardstick.FILTERS} filters; got "
                f"--filters={settings.filters} (drop --torch_python to time other widths)"
            )
        # An algorithm asked for by name: its yardstick's refusal is an error
        # now. Of every algorithm by default, the driver skips that yardstick.
        for stick in sticks if self.algorithms else ():
            reason = stick.refusal(settings)
            if reason:
                raise ValueError(
                    f"{reason}, or drop --torch_python to time {stick.algorithm} "
                    "without it"
                )

    def memory_steps(self) -> list[int]:
        """``--memory_inner_steps`` as integers >= 1, else ValueError."""
        try:
            steps = [int(s) for s in self.memory_inner_steps]
        except ValueError as error:
            raise ValueError(
                f"--memory_inner_steps must be integers, got {self.memory_inner_steps}"
            ) from error
        if not steps or min(steps) < 1:
            raise ValueError(
                f"--memory_inner_steps must be >= 1, got {self.memory_inner_steps}"
            )
        return steps
