"""The training binary: clear errors before training, resume, results on real data."""

import contextlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from experiments import checks, resolve_malloc_arenas
from tests.helpers import REPO, omniglot_dir
from tfmeta import runtime
from tfmeta.configs import get_config
from tfmeta.configs.build import build_learner, build_model
from tfmeta.data.tasks import task_sets
from tfmeta.training import Trainer, evaluate

# One worker computes the finished run (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("train_binary")


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
        task_sets(config_for(missing))
    assert str(missing) in str(error.value) and "images_background.zip" in str(
        error.value
    )
    with pytest.raises(FileNotFoundError, match="images_evaluation"):
        task_sets(config_for(tmp_path))  # exists, but holds no archive


def test_n_way_larger_than_classes_is_refused(tmp_path):
    data_dir = fake_omniglot(tmp_path)
    # 6 characters split 70/10/20: the test split has 1 class
    with pytest.raises(ValueError, match="n_way=5 is larger than the"):
        task_sets(config_for(data_dir, split_protocol="random"))


def test_too_many_shots_are_refused(tmp_path):
    data_dir = fake_omniglot(tmp_path, alphabets=4, characters=10)
    with pytest.raises(ValueError, match=r"k_shot \+ q_query = 10 \+ 15"):
        task_sets(config_for(data_dir, k_shot=10, n_way=2))


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


def test_ensemble_members_share_data_read_from_the_same_folder(tmp_path, monkeypatch):
    """A run trained on $TFMETA_OMNIGLOT_DIR and one trained with --data_dir
    naming the same folder are members of one ensemble; another folder, split
    or way is refused by name."""
    folder, other = tmp_path / "omniglot", tmp_path / "other"
    folder.mkdir()
    other.mkdir()
    monkeypatch.setenv("TFMETA_OMNIGLOT_DIR", str(folder))
    by_variable = get_config(
        "protonet", "omniglot", data_dir="", split_protocol="alphabet"
    )
    by_flag = {**by_variable, "data_dir": str(tmp_path / "." / "omniglot")}
    assert checks.ensemble_mismatch(by_flag, by_variable) is None
    assert checks.ensemble_mismatch(by_variable, by_flag) is None
    assert checks.ensemble_mismatch(
        {**by_flag, "data_dir": str(other)}, by_variable
    ) == (f"data_dir is {str(other)!r}, the run's {str(folder)!r}")
    assert checks.ensemble_mismatch({**by_flag, "split_seed": 1}, by_variable) == (
        "split_seed is 1, the run's 0"
    )
    assert checks.ensemble_mismatch({**by_flag, "n_way": 20}, by_variable).startswith(
        "n_way is 20, the run's "
    )
    monkeypatch.delenv("TFMETA_OMNIGLOT_DIR")
    assert checks.ensemble_mismatch(by_flag, by_variable) == (
        f"data_dir is {str(folder)!r}, the run's ''"
    )


def test_bad_settings_are_refused_before_data_is_read():
    config = get_config("maml", "omniglot")
    config["meta_batch_size"] = 0
    with pytest.raises(ValueError, match="--meta_batch_size must be >= 1, got 0"):
        checks.check_config(config)
    config = get_config("fomaml", "omniglot")
    config["recompute"] = True
    with pytest.raises(ValueError, match="recompute applies to second-order MAML"):
        checks.check_config(config)
    config = get_config("maml", "omniglot")
    config["recompute"] = True
    checks.check_config(config)
    learner = build_learner(config, build_model(config, (28, 28, 1)))
    assert learner.recompute and not learner.first_order
    assert learner.recompute_steps is None
    config["recompute_steps"] = 1
    checks.check_config(config)
    learner = build_learner(config, build_model(config, (28, 28, 1)))
    assert learner.recompute_steps == 1
    config["recompute"] = False
    with pytest.raises(ValueError, match="recompute_steps needs recompute=True"):
        checks.check_config(config)
    config["recompute"], config["unroll_inner_loop"] = True, False
    checks.check_config(config)  # one inner step: no while loop, recompute_steps holds
    config["inner_steps"] = 2
    with pytest.raises(ValueError, match="applies to the unrolled inner loop"):
        checks.check_config(config)
    config = get_config("maml", "omniglot")
    config["task_execution"] = "vectorized"
    with pytest.raises(ValueError, match="task_execution must be one of"):
        checks.check_config(config)
    config = get_config("leo", "embeddings")
    config["task_execution"] = "map_fn"
    with pytest.raises(ValueError, match=r"leo supports task_execution \['loop'\]"):
        checks.check_config(config)
    config = get_config("reptile", "omniglot")
    config["task_execution"] = "map_fn"
    checks.check_config(config)
    learner = build_learner(config, build_model(config, (28, 28, 1)))
    assert learner.task_execution == "map_fn"
    config = get_config("maml", "omniglot")
    config["unroll_inner_loop"] = False
    learner = build_learner(config, build_model(config, (28, 28, 1)))
    assert not learner.unroll_inner_loop


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
        "--meta_batch_size=4",
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


def test_malloc_arenas_flag_resolves_and_refuses_bad_values():
    assert resolve_malloc_arenas("cores") == len(os.sched_getaffinity(0))
    assert resolve_malloc_arenas("glibc") is None
    assert resolve_malloc_arenas("3") == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="positive number"):
            resolve_malloc_arenas(bad)


def test_short_omniglot_run_beats_chance(tmp_path):
    config = get_config("maml", "omniglot")
    config.update(
        data_dir=str(omniglot_dir()),
        meta_batch_size=8,
        num_steps=100,
        test_tasks=40,
        val_tasks=0,
        filters=32,
    )
    data = task_sets(config)
    learner = build_learner(config, build_model(config, data.input_shape))
    before = evaluate(learner, data.test())["mean"]
    Trainer(learner, str(tmp_path), data.train, print_fn=lambda line: None).train(
        config["num_steps"]
    )
    after = evaluate(learner, data.test())
    # 5-way: chance is 20%; adapting the random init alone already gives ~45%
    assert after["mean"] > 0.5 and after["mean"] > before + 0.05, (before, after)


TINY_SINUSOID = [
    "--algorithm=maml",
    "--dataset=sinusoid",
    "--hidden=8,8",
    "--k_shot=5",
    "--meta_batch_size=2",
    "--eval_q_query=5",
    "--val_tasks=4",
    "--test_tasks=4",
    "--eval_batch_size=4",
    "--report_inner_steps=1",
    "--log_every=2",
    "--eval_every=2",
    "--checkpoint_every=2",
    "--malloc_arenas=glibc",
]


def train_in_process(*args):
    """experiments.train's main in this process (quicker than a subprocess);
    the flags are left unparsed after it, as they were before."""
    from absl import flags

    from experiments import train

    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["train", *args])
        train.main([])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished") / "run"
    train_in_process(*TINY_SINUSOID, f"--workdir={workdir}", "--num_steps=4")
    assert json.loads((workdir / "results.json").read_text())["trained_steps"] == 4
    return workdir


@pytest.mark.parametrize(
    "flags_,message",
    [
        (
            ["--outer_optimizer=bogus"],
            "outer_optimizer must be one of ('adam', 'sgd', 'annealed_sgd', 'cosine_adam', 'step_adam'), got 'bogus'",
        ),
        (["--inner_lr=nan"], "--inner_lr must be a finite number, got nan"),
        (
            ["--k_shot=3", "--seed=1", "--outer_optimizer=sgd"],
            (
                "k_shot: stored 5, requested 3; outer_optimizer: stored 'adam', "
                "requested 'sgd'; seed: stored 0, requested 1"
            ),
        ),
        (["--eval_every=1"], "eval_every: stored 2, requested 1"),
        (["--num_steps=8", "--lock"], "is in use by another run (pid"),
    ],
)
def test_a_refused_rerun_changes_nothing_in_the_workdir(finished_run, flags_, message):
    from absl import app

    from tests.training.runs import snapshot
    from tfmeta.training import Workdir

    holder = Workdir(str(finished_run))  # another run holding the lock
    with holder.locked() if "--lock" in flags_ else contextlib.nullcontext():
        before = snapshot(finished_run)
        with pytest.raises(app.UsageError) as error:
            train_in_process(
                *TINY_SINUSOID,
                f"--workdir={finished_run}",
                "--num_steps=4",
                *[f for f in flags_ if f != "--lock"],
            )
        assert snapshot(finished_run) == before
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_checkpoints_without_their_config_are_refused(finished_run, tmp_path):
    import shutil

    from absl import app

    from tests.training.runs import snapshot

    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)
    (workdir / "config.json").unlink()
    before = snapshot(workdir)
    with pytest.raises(app.UsageError, match="holds checkpoints but no config.json"):
        train_in_process(*TINY_SINUSOID, f"--workdir={workdir}", "--num_steps=4")
    assert snapshot(workdir) == before


def test_a_bad_learner_setting_on_a_new_workdir_writes_nothing(tmp_path):
    from absl import app

    with pytest.raises(app.UsageError, match="outer_optimizer must be one of"):
        train_in_process(
            *TINY_SINUSOID, f"--workdir={tmp_path / 'run'}", "--outer_optimizer=bogus"
        )
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_exits_non_zero_without_results(tmp_path):
    with pytest.raises(SystemExit) as stopped:
        train_in_process(
            *TINY_SINUSOID, f"--workdir={tmp_path}", "--num_steps=4", "--inner_lr=1e30"
        )
    assert "non-finite loss" in str(stopped.value.code)
    assert not (tmp_path / "results.json").exists()
    assert not (tmp_path / "checkpoints").exists()


def test_a_longer_run_continues_with_the_schedule_fixed_at_the_start(tmp_path):
    from tfmeta.training import Workdir

    reptile = ["--algorithm=reptile", *TINY_SINUSOID[1:], f"--workdir={tmp_path}"]
    train_in_process(*reptile, "--num_steps=4", "--noevaluate")
    train_in_process(*reptile, "--num_steps=6", "--noevaluate")
    config = Workdir(str(tmp_path)).read_config()
    assert (config["num_steps"], config["schedule_steps"]) == (6, 4)
    learner = build_learner(config, build_model(config, (1,)))
    learner.outer_optimizer.iterations.assign(2)
    # Halfway through the first run's 4 steps (over 6 steps it would be 2/3).
    assert float(learner.outer_optimizer.learning_rate) == pytest.approx(
        0.5 * config["outer_lr"]
    )


@pytest.mark.parametrize(
    "algorithm,dataset,expected",
    [
        (
            "maml",
            "sinusoid",
            "K=10 sinusoid regression training, meta-batch 25, 1 inner step (alpha 0.01), 70000 steps",
        ),
        (
            "protonet",
            "omniglot",
            "60-way 1-shot training, meta-batch 1, queries normalized by the support set, as served, 20000 steps",
        ),
        (
            "maml",
            "omniglot",
            "5-way 1-shot training, meta-batch 32, 1 inner step (alpha 0.4), queries normalized by the support set, as served, 60000 steps",
        ),
    ],
)
def test_training_summary_says_what_is_trained(algorithm, dataset, expected):
    from experiments.train import training_summary
    from tfmeta.configs import BASE, get_config

    config = {**BASE, **get_config(algorithm, dataset), "algorithm": algorithm}
    config["dataset"] = dataset
    assert training_summary(config) == expected
