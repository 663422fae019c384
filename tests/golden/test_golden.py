"""Every golden case rerun against the values the code before the core
restructuring wrote (``values.json``, see ``generate.py``): float32
parameters and step outputs to float32 round-off, float64 meta-gradients and
outputs to 1e-10.

The tolerances were chosen from measurements on the stored cases: starting
from initial values perturbed by one float32 ulp, or running with TensorFlow's
Eigen kernels instead of oneDNN or without the native kernels, the
float32 results move by at most ~0.2 of the tolerance below (most cases
~0.03); a float64 run from values perturbed by one float64 ulp moves by
at most ~3e-5 of its tolerance. Reruns in one process are bitwise equal.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from tests.golden import cases

PATH = pathlib.Path(__file__).with_name("values.json")
VALUES = json.loads(PATH.read_text())
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}
FLOAT64 = {"rtol": 1e-10, "atol": 1e-10}
# float32 and float64 runs draw different random numbers from the same seeds.
RANDOM_DRAWS_BY_DTYPE = {"leo_sampling"}
NAMES = sorted(VALUES["cases"])


def close(got, want, what: str, tolerance: dict, as_float32: bool = False) -> None:
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if as_float32:  # the stored decimal is the shortest one for the float32 value
        want = want.astype(np.float32).astype(np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, stored {want.shape}"
    np.testing.assert_allclose(got, want, err_msg=what, **tolerance)


def close_outputs(got: dict, want: dict, what: str, tolerance, as_float32=False):
    assert sorted(got) == sorted(want), (
        f"{what}: outputs {sorted(got)}, stored {sorted(want)}"
    )
    for key, value in want.items():
        close(got[key], value, f"{what} {key}", tolerance, as_float32)


def test_the_stored_cases_are_the_defined_cases():
    assert sorted(cases.CASES) == NAMES
    assert VALUES["train_steps"] == cases.TRAIN_STEPS
    assert VALUES["gradient_steps"] == cases.GRADIENT_STEPS
    assert VALUES["gradient_lr"] == cases.GRADIENT_LR


@pytest.mark.parametrize("name", NAMES)
def test_the_stored_values_are_not_vacuous(name):
    """Training moved every case's parameters well beyond the tolerance, the
    meta-gradients are not zero, and (without dtype-dependent random draws)
    the float32 and float64 records agree on the first step's outputs, which
    both compute from the same initial values: the two runs are one
    configuration."""
    stored = VALUES["cases"][name]
    moved = max(
        float(np.max(np.abs(np.subtract(final, first))))
        for final, first in zip(stored["float32"]["parameters"], stored["initial"])
    )
    assert moved > 1e-3
    for step in stored["float64"]["meta_gradients"]:
        assert np.sqrt(sum(np.sum(np.square(g)) for g in step)) > 1e-2
    if name not in RANDOM_DRAWS_BY_DTYPE:
        close_outputs(
            stored["float32"]["steps"][0],
            stored["float64"]["steps"][0],
            "first step, float32 against float64",
            {"rtol": 1e-4, "atol": 1e-5},
        )


@pytest.mark.parametrize("name", NAMES)
def test_float32_run(name):
    stored = VALUES["cases"][name]
    run = cases.float32_run(cases.CASES[name], stored["initial"])
    want = stored["float32"]
    assert [list(s) for s in run["shapes"]] == [v["shape"] for v in stored["variables"]]
    assert len(run["steps"]) == len(want["steps"])
    for step, (got, expected) in enumerate(zip(run["steps"], want["steps"])):
        close_outputs(got, expected, f"step {step}", FLOAT32, as_float32=True)
    for variable, got, expected in zip(
        stored["variables"], run["parameters"], want["parameters"]
    ):
        close(got, expected, f"parameter {variable['name']}", FLOAT32, as_float32=True)
    close_outputs(run["eval"], want["eval"], "evaluation", FLOAT32, as_float32=True)


@pytest.mark.parametrize("name", NAMES)
def test_float64_meta_gradients(name):
    stored = VALUES["cases"][name]
    run = cases.float64_run(cases.CASES[name], stored["initial"])
    want = stored["float64"]
    assert [list(s) for s in run["shapes"]] == [v["shape"] for v in stored["variables"]]
    assert len(run["meta_gradients"]) == len(want["meta_gradients"])
    for step, (got, expected) in enumerate(
        zip(run["meta_gradients"], want["meta_gradients"])
    ):
        for variable, g, e in zip(stored["variables"], got, expected):
            close(g, e, f"step {step} meta-gradient {variable['name']}", FLOAT64)
    for step, (got, expected) in enumerate(zip(run["steps"], want["steps"])):
        close_outputs(got, expected, f"step {step}", FLOAT64)
    close_outputs(run["eval"], want["eval"], "evaluation", FLOAT64)
