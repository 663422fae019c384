"""tf.distribute: a meta-step split across replicas equals the single-device step.

Logical devices must be configured before TensorFlow initializes its
devices, so the checks run in a fresh interpreter: one for all of them,
sharing one MirroredStrategy (two strategies in one process would share
collective instance keys), each check's outcome reported on its own line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}

_MIRRORED = """
import json
import sys
import traceback

import keras
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
from tests.helpers import floatx, tiny_conv
from tfmeta.algorithms import MAML, Reptile, get_algorithm

rng = np.random.default_rng(0)
episodes = [
    (
        tf.constant(rng.normal(size=(4, 6, 8, 8, 1)), tf.float64),
        tf.constant(np.tile(np.repeat(np.arange(3), 2), (4, 1)), tf.int32),
        tf.constant(rng.normal(size=(4, 6, 8, 8, 1)), tf.float64),
        tf.constant(np.tile(np.repeat(np.arange(3), 2), (4, 1)), tf.int32),
    )
    for _ in range(3)
]
# Task 2 of every meta-batch has its query labels reversed: Gradient
# Agreement weights are then far from uniform.
episodes = [(sx, sy, qx, tf.reverse(qy, [0])) for sx, sy, qx, qy in episodes]


def learner(task_execution="loop"):
    model = tiny_conv(n_way=3, seed=3)
    settings = dict(inner_lr=0.3, inner_steps=2, task_weighting=weighting, seed=7)
    settings["task_execution"] = task_execution
    if algorithm == "reptile":
        return Reptile(model, keras.optimizers.SGD(0.5), **settings)
    if algorithm == "maml_plus_plus":
        # Running statistics: state updated after the outer update.
        settings.update(running_statistics=True, statistics_momentum=0.5)
    return get_algorithm(algorithm).learner(model, keras.optimizers.Adam(0.01), **settings)


def run(learner):
    outputs = [learner.meta_train_step(e) for e in episodes]
    return [v.numpy() for v in learner.variables + learner.state_variables], outputs


single_runs = {}  # (algorithm, weighting): the one-device run, whatever the execution


def check(execution):  # AssertionError where the mirrored step differs
    # float64: Adam turns the round-off in exactly-zero gradients (a conv bias
    # before BatchNorm) into lr-sized steps in float32.
    with floatx("float64"):
        if (algorithm, weighting) not in single_runs:
            single_runs[algorithm, weighting] = run(learner())
        single_values, single_out = single_runs[algorithm, weighting]
        with strategy.scope():
            mirrored = learner(execution)
        assert mirrored.distributed and strategy.num_replicas_in_sync == 2
        mirrored_values, mirrored_out = run(mirrored)
    for a, b in zip(single_values, mirrored_values):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(single_out, mirrored_out):
        for key in ("loss", "meta_gradient_norm", "task_weights"):
            np.testing.assert_allclose(b[key].numpy(), a[key].numpy(), rtol=1e-5, atol=1e-6)
    weights = single_out[-1]["task_weights"].numpy()
    if weighting == "gradient_agreement":
        assert np.abs(weights - 0.25).max() > 1e-3, weights
    try:
        mirrored.meta_train_step(tuple(t[:3] for t in episodes[0]))
    except ValueError as error:
        assert "does not split evenly over 2 replicas" in str(error), error
    else:
        raise AssertionError("a meta-batch of 3 on 2 replicas was accepted")


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for algorithm, weighting, execution in json.loads(sys.argv[1]):
    try:
        check(execution)
        outcome = "ok"
    except Exception:  # one check's failure is reported, the others still run
        outcome = traceback.format_exc()
    print(json.dumps([algorithm, weighting, execution, outcome]), flush=True)
"""


CASES = [
    ("maml", "uniform", "loop"),
    ("maml", "gradient_agreement", "loop"),
    ("fomaml", "gradient_agreement", "loop"),
    ("reptile", "gradient_agreement", "loop"),
    # Replicas running their tasks through tf.map_fn, against the loop on one device.
    ("maml", "gradient_agreement", "map_fn"),
    # Learners with meta-parameters of their own, a per-task start.
    ("maml_plus_plus", "gradient_agreement", "loop"),
    ("proto_maml", "gradient_agreement", "loop"),
]
# One worker runs the fresh interpreter once for every check.
pytestmark = pytest.mark.xdist_group("mirrored")


@pytest.fixture(scope="module")
def outcomes():
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED, json.dumps(CASES)],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [
        json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")
    ]
    return {tuple(line[:3]): line[3] for line in lines}


@pytest.mark.parametrize("algorithm,weighting,execution", CASES)
def test_mirrored_meta_step_equals_one_device(
    outcomes, algorithm, weighting, execution
):
    assert outcomes[(algorithm, weighting, execution)] == "ok"
