"""The training binary under --strategy=mirrored and multi_worker: the same
parameters as one device, and checkpoints that resume on one device."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO

# One worker trains the one-device run that both strategies are compared with.
pytestmark = pytest.mark.xdist_group("distributed_training")

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
ARGS = [
    "--algorithm=maml",
    "--dataset=sinusoid",
    "--meta_batch_size=4",
    "--num_steps=4",
    "--log_every=2",
    "--eval_every=2",
    "--checkpoint_every=2",
    "--val_tasks=4",
    "--test_tasks=4",
    "--task_weighting=gradient_agreement",
]


def train(workdir, *extra, env=None):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "experiments.train",
            *ARGS,
            f"--workdir={workdir}",
            *extra,
        ],
        cwd=REPO,
        env=env or ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=600):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"timed out:\n{err[-3000:]}") from None
    assert process.returncode == 0, err[-3000:]
    return out


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(path)
        if name.startswith("model_variables")
    }


def assert_same_parameters(a, b):
    first, second = checkpoint_values(a), checkpoint_values(b)
    assert first.keys() == second.keys() and first
    for name in first:
        np.testing.assert_allclose(second[name], first[name], rtol=1e-5, atol=1e-6)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """The run's step-4 checkpoint on one device (ARGS, no strategy)."""
    workdir = tmp_path_factory.mktemp("one")
    finish(train(workdir))
    return workdir / "checkpoints" / "ckpt-4"


def test_mirrored_over_two_cpus_trains_as_one_device(tmp_path, one_device):
    mirrored = train(tmp_path / "mirrored", "--strategy=mirrored", "--cpu_replicas=2")
    out = finish(mirrored)
    assert "mirrored strategy: 2 replicas, 2 tasks each per meta-step" in out
    assert_same_parameters(one_device, tmp_path / "mirrored" / "checkpoints" / "ckpt-4")
    assert (tmp_path / "mirrored" / "results.json").exists()


def test_multi_worker_on_localhost_trains_as_one_device_and_resumes_on_one(
    tmp_path, one_device
):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {**ENV, "TF_CONFIG": json.dumps(config)}
        workers.append(train(tmp_path / "multi", "--strategy=multi_worker", env=env))
    outputs = [finish(worker) for worker in workers]
    assert "multi_worker strategy: 2 replicas" in outputs[0]
    chief = tmp_path / "multi"
    assert_same_parameters(one_device, chief / "checkpoints" / "ckpt-4")
    assert (chief / "results.json").exists()
    assert (chief / "workers" / "worker_1" / "checkpoints" / "ckpt-4.index").exists()
    # The chief's checkpoints resume on one device.
    out = finish(train(chief, "--num_steps=6"))
    assert "resumed from" in out and "ckpt-4" in out
    assert (chief / "checkpoints" / "ckpt-6.index").exists()


def test_multi_worker_without_tf_config_is_refused(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "TF_CONFIG"}
    process = train(tmp_path / "w", "--strategy=multi_worker", env=env)
    _, err = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "needs the TF_CONFIG environment variable" in err
    assert not (tmp_path / "w").exists()
