"""The outer optimizers' learning-rate schedules against their closed forms,
and the settings they refuse."""

from __future__ import annotations

import math

import pytest

from tfmeta.core.outer_optimizers import make_outer_optimizer


def rate_at(optimizer, step: int) -> float:
    """The rate the optimizer applies at outer step ``step``."""
    optimizer.iterations.assign(step)
    return float(optimizer.learning_rate)


@pytest.mark.parametrize("step", [0, 1, 1999, 2000, 3999, 4000, 9000])
def test_step_adam_drops_by_the_rate_every_decay_steps(step):
    optimizer = make_outer_optimizer(
        "step_adam", 1e-3, decay_steps=2000, decay_rate=0.5
    )
    assert rate_at(optimizer, step) == pytest.approx(1e-3 * 0.5 ** (step // 2000))


@pytest.mark.parametrize("step", [0, 250, 500, 1000])
def test_cosine_adam_follows_half_a_cosine(step):
    optimizer = make_outer_optimizer(
        "cosine_adam", 1e-3, schedule_steps=1000, final_lr=1e-5
    )
    expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * step / 1000))
    assert rate_at(optimizer, step) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"decay_steps": 0}, "outer_lr_decay_steps must be an integer >= 1, got 0"),
        ({"decay_steps": 2.5}, "outer_lr_decay_steps must be an integer >= 1, got 2.5"),
        (
            {"decay_rate": float("nan")},
            "outer_lr_decay_rate must be a finite number > 0",
        ),
        ({"decay_rate": -0.5}, "outer_lr_decay_rate must be a finite number > 0"),
    ],
)
def test_bad_step_schedules_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        make_outer_optimizer("step_adam", 1e-3, **kwargs)
