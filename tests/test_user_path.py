"""The path a user walks, for every algorithm of the registry: train,
evaluate, export and write an episode through the binaries, serve the
exports from a fresh process (``experiments.serve_local``, TF Serving's REST
and gRPC APIs), send the client's REST and gRPC requests, and get the
in-memory learner's answer.

The algorithms are read from the registry and each runs on the first
dataset its configs support (Omniglot where it has a config, else LEO's
embeddings, else sinusoid), with the tiny settings of ``tests.export``:
adding an algorithm to the registry adds it here with no edit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfmeta
from experiments import checks
from experiments.export import restore_learner
from tests.binaries import help_flags, help_xml
from tests.export import (
    IMAGE_SIZE,
    dataset_of,
    embedding_episode,
    fake_embeddings,
    fake_omniglot,
    tiny_config,
)
from tests.helpers import REPO
from tfmeta.algorithms import ALGORITHMS
from tfmeta.configs import get_config
from tfmeta.data import preprocess_omniglot_image
from tfmeta.export import METADATA_FILE, existing_versions
from tfmeta.serving import predict_grpc, predict_rest, read_episode

pytestmark = pytest.mark.xdist_group("user_path")

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _flag(key: str, value) -> str:
    if isinstance(value, bool):
        return f"--{'' if value else 'no'}{key}"
    if isinstance(value, (list, tuple)):
        return f"--{key}={','.join(str(v) for v in value)}"
    return f"--{key}={value}"


def run_settings(algorithm: str, dataset: str, data_dir: str) -> dict:
    """The settings of a user's run: every key ``tests.export.tiny_config``
    changes from the algorithm's default config, without meta-validation (the
    checkpoint meta-tested is then the last one, as at the end of ``fit``)."""
    default, tiny = (
        get_config(algorithm, dataset),
        tiny_config(algorithm, dataset, data_dir),
    )
    settings = {key: value for key, value in tiny.items() if value != default.get(key)}
    return {**settings, "val_tasks": 0}


def train_flags(algorithm: str, dataset: str, data_dir: str) -> list[str]:
    """``run_settings`` as the train binary's command line (a cleared
    ``train_*`` key takes the evaluation value it would fall back to)."""
    settings = run_settings(algorithm, dataset, data_dir)
    config = get_config(algorithm, dataset) | settings
    flags = [
        f"--algorithm={algorithm}",
        f"--dataset={dataset}",
        "--malloc_arenas=glibc",
    ]
    for key, value in settings.items():
        if value is None:
            value = config[key.removeprefix("train_")]
        flags.append(_flag(key, value))
    return flags


def run_binaries(binary: str, command_lines: list[list[str]]) -> list[dict]:
    """Each command line of one binary, parsed and run as its console script
    does, in one fresh process (``tests.experiments.binary_runner``)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.experiments.binary_runner",
            binary,
            json.dumps(command_lines),
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for argv, result in zip(command_lines, results):
        assert result["code"] == 0, (binary, argv, result["stderr"][-3000:])
    return results


@pytest.fixture(scope="module")
def user_path(tmp_path_factory):
    """Every algorithm trained, evaluated, exported (one models.config), its
    episode written; the exports served by a fresh serve_local process."""
    root = tmp_path_factory.mktemp("user_path")
    data = {
        "omniglot": str(fake_omniglot(root / "omniglot")),
        "embeddings": str(fake_embeddings(root / "embeddings")),
        "sinusoid": "",
    }
    runs = {name: root / "runs" / name for name in ALGORITHMS}
    datasets = {name: dataset_of(name) for name in ALGORITHMS}
    run_binaries(
        "train",
        [
            [
                *train_flags(name, datasets[name], data[datasets[name]]),
                f"--workdir={runs[name]}",
            ]
            for name in ALGORITHMS
        ],
    )
    run_binaries("evaluate", [[f"--workdir={runs[name]}"] for name in ALGORITHMS])
    models = root / "models"
    run_binaries(
        "export",
        [
            [f"--workdir={runs[name]}", f"--export_dir={models / name}"]
            for name in ALGORITHMS
        ],
    )
    images = [name for name in ALGORITHMS if datasets[name] == "omniglot"]
    run_binaries(
        "write_episode",
        [
            [f"--workdir={runs[name]}", f"--out_dir={root / 'episodes' / name}"]
            for name in images
        ],
    )
    # Its log goes to a file: a pipe nobody reads blocks the server once full
    # (loading many exports logs more than a pipe holds).
    with open(root / "serve_local.log", "w") as log:  # the child keeps its copy
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.serve_local",
                f"--models_config={models / 'models.config'}",
                "--rest_port=0",
                "--grpc_port=0",
            ],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    try:
        ports = {}
        for line in server.stdout:
            match = re.match(r"(REST|gRPC): (?:http://)?([\d.]+:\d+)", line)
            if match:
                ports[match[1]] = match[2]
            if len(ports) == 2:
                break
        assert len(ports) == 2, (root / "serve_local.log").read_text()[-3000:]
        yield {
            "root": root,
            "data": data,
            "runs": runs,
            "models": models,
            "datasets": datasets,
            "rest": ports["REST"],
            "grpc": ports["gRPC"],
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


def _request(path, name: str) -> tuple[str, dict, list]:
    """(signature, inputs, what the in-memory learner gets: support_x, support_y, query_x)."""
    metadata = json.loads(
        (
            path["models"]
            / name
            / str(existing_versions(str(path["models"] / name))[-1])
            / METADATA_FILE
        ).read_text()
    )
    if "adapt_and_predict_images" in metadata["signatures"].split(","):
        episode_dir = path["root"] / "episodes" / name
        episode = read_episode(episode_dir / "support", episode_dir / "query")

        def decoded(images):
            return tf.stack(
                [preprocess_omniglot_image(tf.constant(b), IMAGE_SIZE) for b in images]
            )

        tensors = [
            decoded(episode.support_images),
            tf.constant(episode.support_y),
            decoded(episode.query_images),
        ]
        return "adapt_and_predict_images", episode.inputs(), tensors
    assert path["datasets"][name] == "embeddings", metadata["signatures"]
    support_x, support_y, query_x = embedding_episode(seed=2, k_shot=2)
    # As a user's script sends them: int64 labels, float64 vectors.
    inputs = {
        "support_x": support_x.astype(np.float64),
        "support_y": support_y.astype(np.int64),
        "query_x": query_x,
    }
    return (
        "adapt_and_predict",
        inputs,
        [tf.constant(v) for v in (support_x, support_y, query_x)],
    )


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_trained_exported_and_served_answers_are_the_learners(user_path, name):
    workdir = user_path["runs"][name]
    results = json.loads((workdir / "results.json").read_text())
    assert (results["algorithm"], results["trained_steps"]) == (name, 2)
    assert results["evaluations"][0]["num_tasks"] == 2
    signature, inputs, (support_x, support_y, query_x) = _request(user_path, name)

    config = checks.trained_workdir_config(str(workdir))
    learner, _ = restore_learner(
        str(workdir), {**config, "transductive": False}, "best"
    )
    adapted = learner.adapt(support_x, support_y)
    logits = learner.predict(adapted, query_x, support_x).numpy()

    served_rest = predict_rest(user_path["rest"], name, inputs, signature)
    served_grpc = predict_grpc(user_path["grpc"], name, inputs, signature)
    for served in (served_rest, served_grpc):
        # Prototype logits are squared distances: float32 round-off scales with them.
        np.testing.assert_allclose(served["logits"], logits, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(served["classes"], served_rest["classes"])
    np.testing.assert_allclose(
        served_rest["probabilities"], tf.nn.softmax(logits).numpy(), atol=1e-5
    )


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_a_python_script_reports_the_binarys_figure(user_path, name):
    """docs/examples.md's script, with the binary run's settings: the same
    learner meta-trained on the same task sets by Keras' fit, and the same
    meta-test figure as the train binary reported."""
    dataset = user_path["datasets"][name]
    settings = run_settings(name, dataset, user_path["data"][dataset])
    config = tfmeta.get_config(name, dataset, **settings)
    tasks = tfmeta.task_sets(config)
    learner = tfmeta.build_learner(config, tasks.input_shape)
    model = tfmeta.MetaLearnerModel(learner)
    model.compile()
    model.fit(tasks.train(), steps_per_epoch=config["num_steps"], epochs=1, verbose=0)
    result = tfmeta.evaluate(learner, tasks.test())
    reported = json.loads((user_path["runs"][name] / "results.json").read_text())
    served = reported["evaluations"][0]
    assert int(learner.outer_optimizer.iterations.numpy()) == reported["trained_steps"]
    assert result["num_tasks"] == served["num_tasks"] == config["test_tasks"]
    for key in ("mean", "ci95", "median", "loss"):
        np.testing.assert_allclose(result[key], served[key], rtol=1e-5, err_msg=key)
    assert tfmeta.training.format_result(result) == tfmeta.training.format_result(
        served
    )


@pytest.mark.parametrize(
    "binary, flag", [("train", "algorithm"), ("benchmark", "algorithms")]
)
def test_the_help_names_every_algorithm(binary, flag):
    """What ``--help`` says of the flag (absl writes its --helpfull and
    --helpxml from the same help string; the docs' test asks for the XML)."""
    module = f"experiments.{binary}"
    root = help_flags(module)
    assert root is not None, help_xml(module).stderr[-2000:]
    (help_text,) = [
        element.findtext("meaning")
        for element in root.iter("flag")
        if element.findtext("name") == flag
    ]
    named = set(re.findall(r"\w+", help_text))
    assert set(ALGORITHMS) <= named, help_text
