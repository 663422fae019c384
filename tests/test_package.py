"""Package-level runtime defaults."""

import os
import subprocess
import sys

import pytest

CODE = "import tfmeta, tensorflow as tf; print(tfmeta.onednn_enabled())"


def _enabled(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if env_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = env_value
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()[-1]


@pytest.mark.parametrize("env_value, expected", [(None, "True"), ("0", "False")])
def test_onednn_kernels_on_unless_the_user_chose(env_value, expected):
    # Importing tfmeta before TensorFlow turns oneDNN on; a user's setting wins.
    assert _enabled(env_value) == expected


def test_benchmark_driver_does_not_load_tensorflow():
    # A child's peak RSS (ru_maxrss) starts from its parent's at exec, so the
    # driver that spawns the timed workers and the yardstick must stay small.
    code = (
        "import os, sys, experiments.benchmark; "
        "print('tensorflow' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert done.stdout.split() == ["False", "1"]
