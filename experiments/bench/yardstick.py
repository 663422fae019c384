"""The PyTorch yardsticks of ``experiments.benchmark`` (``shared/bench/``):
their networks and inputs, the flags each takes, and the tfmeta algorithm
each computes.

* ``torch_maml_reference.py`` (``--yardstick``): MAML as a PyTorch user
  writes it, the 4-block conv net of the MAML paper with 64 filters and 2x2
  max-pooling rounding up (``ceil_mode``, as tfmeta's 'same' pooling: 28 ->
  14 -> 7 -> 4 -> 2). ``--order=2`` differentiates through the inner loop
  (second-order MAML, beside ``maml``), ``--order=1`` does not (beside
  ``fomaml``).
* ``torch_protonet_reference.py`` (``--protonet_yardstick``): a Prototypical
  Networks episode as a PyTorch user writes it (conv4 embedding, class means,
  squared Euclidean distances, Adam), beside ``protonet``, in eager mode and
  under ``torch.compile`` (``--compile``). Its max-pooling rounds down (28 ->
  14 -> 7 -> 3 -> 1, 64 features). It takes one episode per step: no
  meta-batch.

Both run on random 28x28x1 images (Omniglot's shape). An algorithm not named
here has no yardstick row; its figures stand beside the others'.

  python -m experiments.benchmark --torch_python=../.venv-torch/bin/python
"""

from __future__ import annotations

import dataclasses
from typing import Any

IMAGE_SHAPE = (28, 28, 1)
FILTERS = 64


@dataclasses.dataclass(frozen=True)
class Yardstick:
    """One way of running a yardstick script.

    Attributes:
      algorithm: the tfmeta algorithm it computes.
      variant: what tells it apart from the algorithm's other yardsticks.
      script_flag: the flag (and ``Options`` field) naming its script.
      flags: the script's own flags for this variant.
      meta_batch: whether the script takes a meta-batch, inner steps and
        alpha (the MAML script); else one episode per step.
      ceil_mode: whether its 2x2 max-pooling rounds up (as tfmeta's conv4).
    """

    algorithm: str
    variant: str
    script_flag: str
    flags: tuple[str, ...] = ()
    meta_batch: bool = True
    ceil_mode: bool = True

    @property
    def name(self) -> str:
        return f"{self.algorithm} ({self.variant})"

    def arguments(self, settings: Any, inner_lr: float | None) -> list[str]:
        """The script's flags for ``settings`` (``Settings``) and alpha."""
        arguments = list(self.flags)
        for name in ("n_way", "k_shot", "q_query", "steps", "threads"):
            arguments.append(f"--{name}={getattr(settings, name)}")
        if self.meta_batch:
            arguments += [
                f"--meta_batch={settings.meta_batch_size}",
                f"--inner_steps={settings.inner_steps}",
                f"--inner_lr={inner_lr}",
            ]
        return arguments

    def refusal(self, settings: Any) -> str | None:
        """Why it cannot time ``settings``; None where it can."""
        if not self.meta_batch and settings.meta_batch_size != 1:
            return (
                f"--meta_batch_size={settings.meta_batch_size}: the {self.algorithm} "
                "yardstick runs one episode per step: pass --meta_batch_size=1"
            )
        return None


# The yardsticks beside each tfmeta algorithm; its ratio is to the fastest.
YARDSTICKS = {
    "maml": (Yardstick("maml", "order 2", "yardstick", ("--order=2",)),),
    "fomaml": (Yardstick("fomaml", "order 1", "yardstick", ("--order=1",)),),
    "protonet": tuple(
        Yardstick(
            "protonet",
            variant,
            "protonet_yardstick",
            flags,
            meta_batch=False,
            ceil_mode=False,
        )
        for variant, flags in (("eager", ()), ("torch.compile", ("--compile",)))
    ),
}


def yardsticks_of(algorithms: tuple[str, ...]) -> list[Yardstick]:
    """The yardsticks beside ``algorithms`` (empty: every algorithm)."""
    names = algorithms or tuple(YARDSTICKS)
    return [stick for name in names for stick in YARDSTICKS.get(name, ())]
