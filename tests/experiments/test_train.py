"""The training binary: clear errors before training, resume, results on real data."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from experiments import common, resolve_malloc_arenas
from experiments.configs import get_config
from tests.helpers import REPO, omniglot_dir
from tfmeta import runtime
from tfmeta.training import Trainer, evaluate


def fake_omniglot(root, alphabets=2, characters=3, drawers=20):
    """A tiny archive in the original layout: images_background_small1.zip."""
    rng = np.random.default_rng(0)
    path = root / "images_background_small1.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for a in range(alphabets):
            for c in range(characters):
                for d in range(drawers):
                    pixels = (rng.random((105, 105, 1)) > 0.1).astype(np.uint8) * 255
                    png = tf.io.encode_png(pixels).numpy()
                    name = f"images_background_small1/Alphabet{a}/character{c + 1:02d}/{a:02d}{c:02d}_{d + 1:02d}.png"
                    archive.writestr(name, png)
    return root


def config_for(data_dir, **overrides):
    config = get_config(overrides.pop("algorithm", "maml"), "omniglot")
    config.update(data_dir=str(data_dir), rotations="none", **overrides)
    return config


def run_binary(*args, env=None):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_missing_data_folder_names_path_and_expected_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        common.build_data(config_for(missing))
    assert str(missing) in str(error.value) and "images_background.zip" in str(
        error.value
    )
    with pytest.raises(FileNotFoundError, match="images_evaluation"):
        common.build_data(config_for(tmp_path))  # exists, but holds no archive


def test_n_way_larger_than_classes_is_refused(tmp_path):
    data_dir = fake_omniglot(tmp_path)
    # 6 characters split 70/10/20: the test split has 1 class
    with pytest.raises(ValueError, match="n_way=5 is larger than the"):
        common.build_data(config_for(data_dir, split_protocol="random"))


def test_too_many_shots_are_refused(tmp_path):
    data_dir = fake_omniglot(tmp_path, alphabets=4, characters=10)
    with pytest.raises(ValueError, match=r"k_shot \+ q_query = 10 \+ 15"):
        common.build_data(config_for(data_dir, k_shot=10, n_way=2))


@pytest.mark.parametrize(
    "algorithm, dataset, message",
    [
        ("mamll", "omniglot", "unknown algorithm 'mamll'"),
        ("maml", "cifar", "unknown dataset 'cifar'"),
    ],
)
def test_unknown_algorithm_or_dataset(algorithm, dataset, message):
    with pytest.raises(ValueError, match=message):
        get_config(algorithm, dataset)


def test_bad_settings_are_refused_before_data_is_read():
    config = get_config("maml", "omniglot")
    config["meta_batch_size"] = 0
    with pytest.raises(ValueError, match="--meta_batch_size must be >= 1, got 0"):
        common.check_config(config)
    config = get_config("fomaml", "omniglot")
    config["recompute"] = True
    with pytest.raises(ValueError, match="recompute applies to second-order MAML"):
        common.check_config(config)
    config = get_config("maml", "omniglot")
    config["recompute"] = True
    common.check_config(config)
    learner = common.build_learner(config, common.build_model(config, (28, 28, 1)))
    assert learner.recompute and not learner.first_order
    assert learner.recompute_steps is None
    config["recompute_steps"] = 1
    common.check_config(config)
    learner = common.build_learner(config, common.build_model(config, (28, 28, 1)))
    assert learner.recompute_steps == 1
    config["recompute"] = False
    with pytest.raises(ValueError, match="recompute_steps needs recompute=True"):
        common.check_config(config)
    config["recompute"], config["unroll_inner_loop"] = True, False
    common.check_config(config)  # one inner step: no while loop, recompute_steps holds
    config["inner_steps"] = 2
    with pytest.raises(ValueError, match="applies to the unrolled inner loop"):
        common.check_config(config)
    config = get_config("maml", "omniglot")
    config["task_execution"] = "vectorized"
    with pytest.raises(ValueError, match="task_execution must be one of"):
        common.check_config(config)
    config = get_config("leo", "embeddings")
    config["task_execution"] = "map_fn"
    with pytest.raises(ValueError, match=r"leo supports task_execution \['loop'\]"):
        common.check_config(config)
    config = get_config("reptile", "omniglot")
    config["task_execution"] = "map_fn"
    common.check_config(config)
    learner = common.build_learner(config, common.build_model(config, (28, 28, 1)))
    assert learner.task_execution == "map_fn"
    config = get_config("maml", "omniglot")
    config["unroll_inner_loop"] = False
    learner = common.build_learner(config, common.build_model(config, (28, 28, 1)))
    assert not learner.unroll_inner_loop


def test_binary_fails_fast_on_missing_data(tmp_path):
    result = run_binary(
        "--workdir", str(tmp_path / "w"), "--data_dir", str(tmp_path / "absent")
    )
    assert result.returncode != 0
    assert str(tmp_path / "absent") in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_binary_reports_a_bad_setting_without_a_traceback(tmp_path):
    result = run_binary("--workdir", str(tmp_path / "w"), "--recompute_steps=1")
    assert result.returncode != 0
    assert result.stderr.rstrip().endswith(
        "recompute_steps needs recompute=True: without it no inner step is recomputed"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()


def test_binary_trains_resumes_and_refuses_changed_model(tmp_path):
    workdir = str(tmp_path / "run")
    args = [
        "--algorithm=maml",
        "--dataset=sinusoid",
        f"--workdir={workdir}",
        "--log_every=10",
        "--eval_every=10",
        "--checkpoint_every=10",
        "--val_tasks=10",
        "--test_tasks=20",
    ]
    first = run_binary(*args, "--num_steps=10")
    assert first.returncode == 0, first.stderr[-2000:]
    assert "step 10/10" in first.stdout and "meta-test" in first.stdout
    assert "CPU threading tasks: intra_op 1, inter_op" in first.stderr
    second = run_binary(*args, "--num_steps=20")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resumed from" in second.stdout and "step 20/20" in second.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    steps = [e["inner_steps"] for e in results["evaluations"]]
    assert steps == [10, 1, 5]
    assert all(
        e["num_tasks"] == 20 and e["mean"] > 0 and e["ci95"] > 0
        for e in results["evaluations"]
    )
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["num_steps"] == 20 and stored["inner_lr"] == 0.01
    refused = run_binary(*args, "--num_steps=30", "--hidden=20,20")
    assert refused.returncode != 0
    assert "hidden: stored [40, 40], requested [20, 20]" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_cpu_threading_flag_resolves_auto_by_xla():
    assert runtime.resolve_cpu_threading("auto", jit_compile=False) == "tasks"
    assert runtime.resolve_cpu_threading("auto", jit_compile=True) == "ops"
    assert runtime.resolve_cpu_threading("tasks", jit_compile=True) == "tasks"
    with pytest.raises(ValueError, match="auto"):
        runtime.resolve_cpu_threading("cores", jit_compile=False)


def test_malloc_arenas_flag_resolves_and_refuses_bad_values(tmp_path):
    assert resolve_malloc_arenas("cores") == len(os.sched_getaffinity(0))
    assert resolve_malloc_arenas("glibc") is None
    assert resolve_malloc_arenas("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="positive number"):
            resolve_malloc_arenas(bad)
    refused = run_binary(f"--workdir={tmp_path / 'run'}", "--malloc_arenas=0")
    assert refused.returncode != 0
    assert "--malloc_arenas=0: must be one of ('cores', 'glibc')" in refused.stderr
    assert not (tmp_path / "run").exists()


def test_short_omniglot_run_beats_chance(tmp_path):
    config = get_config("maml", "omniglot")
    config.update(
        data_dir=str(omniglot_dir()),
        meta_batch_size=16,
        num_steps=100,
        test_tasks=40,
        val_tasks=0,
        filters=32,
    )
    data = common.build_data(config)
    learner = common.build_learner(config, common.build_model(config, data.input_shape))
    before = evaluate(learner, data.test())["mean"]
    Trainer(learner, str(tmp_path), data.train, print_fn=lambda line: None).train(
        config["num_steps"]
    )
    after = evaluate(learner, data.test())
    # 5-way: chance is 20%; adapting the random init alone already gives ~45%
    assert after["mean"] > 0.5 and after["mean"] > before + 0.05, (before, after)
