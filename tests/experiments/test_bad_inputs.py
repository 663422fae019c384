"""Every bad input to the binaries ends in one line on stderr naming the
value, exit status 1, before any long work: no traceback, hang or crash.

Each case runs the binary's main as its console script does (flags parsed
by ``experiments._parse_flags``, an ``InputError`` printed by
``experiments._one_line_errors``): train and evaluate in this process,
export, embed and benchmark in one fresh process each (``binary_runner``;
their flags clash with train's). Two runs of the real entry point check the whole path.
``python -m experiments.results.bad_inputs`` runs a wider survey, each input
in its own process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from tests.experiments.binary_runner import run
from tests.experiments.test_train import fake_omniglot
from tests.helpers import REPO
from tfmeta.configs import get_config
from tfmeta.training import write_json

# One worker builds the bad files and runs the fresh processes once.
pytestmark = pytest.mark.xdist_group("bad_inputs")
# TensorFlow's and absl's log lines, which the binaries do not write.
_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|"
    r"To enable the following instructions|(INFO|WARNING):tensorflow:)"
)

OMNIGLOT = (
    "--data_dir={omni} --num_steps=1 --meta_batch_size=2 --filters=4 --val_tasks=0 "
    "--test_tasks=2 --eval_batch_size=2 --noevaluate --rotations=none "
    "--malloc_arenas=glibc --cpu_threading=ops"
)
SINUSOID = (
    "--dataset=sinusoid --hidden=8 --k_shot=5 --num_steps=1 --meta_batch_size=2 "
    "--val_tasks=0 --test_tasks=2 --eval_batch_size=2 --noevaluate --malloc_arenas=glibc "
    "--cpu_threading=ops"
)
LEO = (
    "--algorithm=leo --dataset=embeddings --data_dir={tmp}/absent "
    "--embedding_dataset=x --malloc_arenas=glibc"
)
# (base, bad input, what the message names)
# fmt: off
TRAIN = [
    (OMNIGLOT, "--inner_lr=nan", "--inner_lr must be a finite number, got nan"),
    (OMNIGLOT, "--inner_lr=inf", "got inf"),
    (OMNIGLOT, "--outer_lr=nan", "--outer_lr must be a finite number, got nan"),
    (OMNIGLOT, "--outer_lr=-1", "got -1"),
    (OMNIGLOT, "--final_outer_lr=-inf", "got -inf"),
    (OMNIGLOT, "--filters=0", "filters=0"),
    (OMNIGLOT, "--filters=-3", "filters=-3"),
    (OMNIGLOT, "--depth=0", "depth=0"),
    (SINUSOID, "--hidden=0", "--hidden sizes must be >= 1, got [0]"),
    (SINUSOID, "--hidden=8,-5", "got [8, -5]"),
    (SINUSOID, "--hidden=8,abc", "--hidden must be a comma-separated list of integers"),
    (OMNIGLOT, "--outer_optimizer=bogus", "got 'bogus'"),
    (OMNIGLOT, "--inner_optimizer=bogus", "--inner_optimizer must be one of"),
    (OMNIGLOT, "--pooling=bogus", "--pooling must be one of ('stride', 'max'), got 'bogus'"),
    (OMNIGLOT, "--adapt_variables=bogus", "--adapt_variables must be one of"),
    (OMNIGLOT, "--task_weighting=bogus", "--task_weighting must be one of"),
    (OMNIGLOT, "--task_execution=bogus", "got 'bogus'"),
    (OMNIGLOT, "--rotations=bogus", "got 'bogus'"),
    (OMNIGLOT, "--split_protocol=bogus", "got 'bogus'"),
    (OMNIGLOT, "--algorithm=bogus", "unknown algorithm 'bogus'"),
    (OMNIGLOT, "--dataset=bogus", "unknown dataset 'bogus'"),
    (OMNIGLOT, "--config=bogus", "unknown config 'bogus'"),
    (OMNIGLOT, "--model=mlp", "--model=mlp does not fit --dataset=omniglot"),
    (SINUSOID, "--model=conv4", "--model=conv4 does not fit --dataset=sinusoid"),
    (OMNIGLOT, "--image_size=0", "--image_size must be >= 1, got 0"),
    (OMNIGLOT, "--image_size=200000", "--image_size=200000"),
    (OMNIGLOT, "--meta_batch_size=100000000", "--meta_batch_size=100000000"),
    (OMNIGLOT, "--k_shot=1000000000", "--k_shot=1000000000"),
    (SINUSOID, "--k_shot=1000000000", "--k_shot=1000000000"),
    (SINUSOID, "--meta_batch_size=100000000", "--meta_batch_size=100000000: task_execution='loop' puts one call per task"),
    (SINUSOID, "--eval_batch_size=5000 --test_tasks=5000", "--eval_batch_size=5000: task_execution='loop'"),
    (SINUSOID, "--eval_q_query=1000000000", "--eval_q_query=1000000000"),
    (OMNIGLOT, "--eval_batch_size=100000000 --test_tasks=100000000", "--eval_batch_size=100000000"),
    (OMNIGLOT, "--n_way=0", "--n_way must be >= 1, got 0"),
    (OMNIGLOT, "--n_way=30", "--n_way=30 is larger than the 28 classes"),
    (OMNIGLOT, "--k_shot=25", "k_shot + q_query = 25 + 1"),  # 20 drawings each
    (OMNIGLOT, "--q_query=0", "--q_query must be >= 1, got 0"),
    (OMNIGLOT, "--train_k_shot=0", "--train_k_shot must be >= 1"),
    (OMNIGLOT, "--eval_batch_size=0", "--eval_batch_size must be >= 1, got 0"),
    (OMNIGLOT, "--log_every=0", "--log_every must be >= 1, got 0"),
    (OMNIGLOT, "--checkpoint_every=0", "--checkpoint_every must be >= 1, got 0"),
    (OMNIGLOT, "--num_steps=-1", "--num_steps must be >= 0, got -1"),
    (OMNIGLOT, "--noisy_task_fraction=2", "got 2.0"),
    (OMNIGLOT, "--inner_steps=1000000", "--inner_steps must be at most 10000"),
    (OMNIGLOT, "--eval_inner_steps=1000000", "--eval_inner_steps must be at most 10000"),
    (OMNIGLOT, "--inner_steps=500", "--inner_steps=500: an unrolled inner loop"),
    (OMNIGLOT, "--report_inner_steps=-2", "--report_inner_steps must be >= 0 each, got -2"),
    (OMNIGLOT, "--algorithm=maml_plus_plus --inner_steps=200 --nounroll_inner_loop", "--inner_steps=200"),
    (LEO, "--inner_steps=200", "--inner_steps=200 with finetune_steps=5"),
    (LEO, "--num_latents=0", "--num_latents must be an integer >= 1, got 0"),
    (OMNIGLOT, "--algorithm=reptile --inner_batch_size=0", "got 0"),
    (OMNIGLOT, "--algorithm=protonet --distance=bogus", "got 'bogus'"),
    (OMNIGLOT, "--recompute_steps=1", "recompute_steps needs recompute=True: without it no inner step is recomputed"),
    (OMNIGLOT, "--data_dir={tmp}/absent", "{tmp}/absent does not exist"),
    (OMNIGLOT, "--data_dir={tmp}/afile", "Omniglot folder {tmp}/afile is a file"),
    (OMNIGLOT, "--data_dir={tmp}/corrupt", "corrupt/images_background_small1.zip is not a readable zip"),
    (OMNIGLOT, "--data_dir={tmp}/truncated", "truncated/images_background_small1.zip is not a readable zip"),
    (OMNIGLOT, "--data_dir={tmp}/damaged", "the archive is damaged"),
    (OMNIGLOT, "--data_dir={tmp}/badpng", "a.png under {tmp}/badpng as PNG: Unknown image"),
    (OMNIGLOT, "--dataset=folder --data_dir={tmp}/badimages --val_tasks=0", "Cannot decode {tmp}/badimages/train/class0/0.png: Unknown image"),
    (OMNIGLOT, "--dataset=folder --data_dir=", "--dataset=folder needs --data_dir"),
    (OMNIGLOT, "--workdir={tmp}/afile", "--workdir={tmp}/afile is a file, not a folder"),
    (OMNIGLOT, "--workdir={tmp}/afile/run", "--workdir={tmp}/afile/run: {tmp}/afile is a file"),
    (OMNIGLOT, "--strategy=mirrored --cpu_replicas=4", "--cpu_replicas=4 is more than the --meta_batch_size=2"),
    (OMNIGLOT, "--strategy=mirrored --cpu_replicas=100000", "flag --cpu_replicas=100000"),
    (OMNIGLOT, "--cpu_threading=bogus", "flag --cpu_threading=bogus"),
    (OMNIGLOT, "--malloc_arenas=0", "flag --malloc_arenas=0"),
    (OMNIGLOT, "--n_way=abc", "flag --n_way=abc"),
    (OMNIGLOT, "--support_copies=-1", "--support_copies must be in [0, 64], got -1"),
    (OMNIGLOT, "--query_copies=65", "--query_copies must be in [0, 64], got 65"),
    (SINUSOID, "--support_copies=2", "--support_copies distorts images; --dataset=sinusoid has none"),
    (OMNIGLOT, "--no_such_flag=1", "no_such_flag"),
]
# fmt: on
# (the workdir, or a variant of the run's, what the message names)
# fmt: off
EVALUATE = [
    ("--workdir={tmp}/absent", "no config.json in workdir '{tmp}/absent'"),
    ("--workdir={tmp}/afile", "{tmp}/afile"),
    ("--workdir={run}_badjson", "run_badjson/config.json is not valid JSON"),
    ("--workdir={run}_list", "run_list/config.json does not hold a config"),
    ("--workdir={run}_missing", "run_missing/config.json has no 'dataset'"),
    ("--workdir={run}_n_way", "run_n_way/config.json: n_way must be >= 1, got 0"),
    ("--workdir={run}_nan", "run_nan/config.json: inner_lr must be a finite number, got nan"),
    ("--workdir={run}_type", "run_type/config.json: meta_batch_size must be an integer, got 'abc'"),
    ("--workdir={run}_optimizer", "got 'bogus'"),
    ("--workdir={run}_steps", "config.json: eval_inner_steps must be at most 10000"),
    ("--workdir={run}_moved", "{tmp}/moved does not exist"),
    ("--workdir={run}", "run/checkpoints can be restored"),
    ("--workdir={run} --checkpoint=bogus", "flag --checkpoint=bogus"),
    ("--workdir={run} --support_copies=2", "--support_copies distorts images; --dataset=sinusoid has none"),
    ("--workdir={run} --ensemble={run}", "an ensemble averages class probabilities; sinusoid runs regress"),
    ("--workdir={run} --ensemble={tmp}/absent", "no config.json in workdir '{tmp}/absent'"),
    ("--workdir={run}_unsaved", "has this run saved one yet?"),
    ("--workdir={run} --results_dir={tmp}/afile", "--results_dir={tmp}/afile is a file, not a folder"),
    ("--workdir={run} --results_dir={run}_nan", "--results_dir={run}_nan is another run's folder"),
    ("--workdir={run} --test_tasks=100", "--test_tasks: evaluate meta-tests with the run's own settings"),
    ("--workdir={run} --algorithm=protonet", "only --support_copies, --support_augment, --query_copies, --query_augment"),
]
# fmt: on
# fmt: off
EXPORT = [
    ("--export_dir={tmp}/afile", "--export_dir={tmp}/afile is a file, not a folder"),
    ("--export_dir={tmp}/afile/model", "--export_dir={tmp}/afile/model: {tmp}/afile is a file"),
    ("--export_dir={tmp}/models/3", "export_dir {tmp}/models/3 is named like a version"),
    ("--export_dir={tmp}/badconfig/model", "badconfig/models.config is not a TF Serving model config"),
    ("--models_config={tmp}", "{tmp} is a folder, not a model config file"),
    ("--models_config={tmp}/afile/models.config", "{tmp}/afile is a file"),
    ('--model_name=a"b', "--model_name: model name must be non-empty without quotes"),
    ("--model_name=a/b", "got 'a/b'"),
    ('--base_path=x"y', "--base_path: base path must be non-empty without quotes"),
    ("--max_support_examples=0", "--max_support_examples must be a positive int, got 0"),
    ("--max_abs_input=nan", "--max_abs_input must be a positive finite number, got nan"),
    ("--support_augment=0", "--support_augment must be in (0, 3.0], got 0.0"),
    ("--workdir={run}_n_way", "config.json: n_way must be >= 1, got 0"),
    ("--workdir={run}_nan", "config.json: inner_lr must be a finite number, got nan"),
    ("--workdir={run}", "run/checkpoints can be restored"),
    ("--workdir={run} --checkpoint=bogus", "flag --checkpoint=bogus"),
    ("--workdir={run}_unsaved", "has this run saved one yet?"),
    ("--workdir={tmp}/absent", "no config.json in workdir '{tmp}/absent'"),
]
# fmt: on
# fmt: off
EMBED = [
    ("--output_dir={tmp}/afile", "--output_dir={tmp}/afile is a file, not a folder"),
    ("--output_dir={tmp}/afile/out", "--output_dir={tmp}/afile/out: {tmp}/afile is a file"),
    ("--filters=0", "filters=0"),
    ("--depth=-2", "depth=-2"),
    ("--image_size=0", "--image_size must be >= 1, got 0"),
    ("--image_size=200000", "image_size=200000"),
    ("--batch_size=0", "--batch_size must be >= 1, got 0"),
    ("--learning_rate=nan", "--learning_rate must be a finite number > 0, got nan"),
    ("--learning_rate=-1", "got -1.0"),
    ("--max_steps=0 --epochs=0", "--epochs must be >= 1"),
    ("--eval_tasks=0", "--eval_tasks must be >= 1, got 0"),
    ("--augment=4", "--augment must be in [0, 3.0], got 4.0"),
    ("--split_protocol=bogus", "got 'bogus'"),
    ("--embedding_dataset=", "--embedding_dataset must be one folder's name"),
    ("--embedding_crop=../x", "got '../x'"),
    ("--data_dir={tmp}/corrupt", "is not a readable zip archive"),
    ("--data_dir={tmp}/afile", "{tmp}/afile"),
    ("--data_dir={tmp}/absent", "Omniglot folder {tmp}/absent does not exist"),
]
# fmt: on
# The benchmark refuses before its first worker process starts (a case it
# accepted would time steps for minutes: the fixture's timeout).
BENCHMARK_BASE = "--algorithms=maml --xla=off --repeats=1 --steps=1"
# fmt: off
BENCHMARK = [
    ("--algorithms=bogus", "unknown algorithm 'bogus'; expected one of"),
    ("--n_way=0", "--n_way must be >= 1, got 0"),
    ("--repeats=0", "--repeats must be >= 1, got 0"),
    ("--xla=sometimes", "--xla must be among"),
    ("--output_json={tmp}/absent/speed.json", "--output_json={tmp}/absent/speed.json: not a file in an existing folder"),
    ("--output_json={tmp}", "not a file in an existing folder"),
    ("--torch_python={tmp}/afile", "--torch_python={tmp}/afile is not an executable"),
    ("--recompute_steps=1", "recompute_steps needs recompute"),
    ("--recompute --recompute_steps=1 --nounroll_inner_loop --inner_steps=2", "applies to the unrolled inner loop"),
    ("--mode=flops --algorithms=fomaml", "--mode=flops reads the steps whose FLOPs are counted (maml, protonet); --algorithms has none of them"),
    ("--algorithms=protonet --torch_python={python} --protonet_yardstick={tmp}/afile", "--meta_batch_size=32: the protonet yardstick runs one episode per step: pass --meta_batch_size=1"),
]
# fmt: on


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).random((8, 8, 1)) > 0.5
    return tf.io.encode_png(pixels.astype(np.uint8) * 255).numpy()


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Bad files and folders, Omniglot-like data and trained-run folders whose
    config.json was edited by hand (their checkpoint is damaged: nothing is
    restored before the config is refused)."""
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "afile").write_text("a file\n")
    # 40 classes of 20 drawings: 28 to train on, 4 to validate, 8 to test
    omni = fake_omniglot(
        tmp_path_factory.mktemp("omniglot"), alphabets=4, characters=10
    )
    archive = (omni / "images_background_small1.zip").read_bytes()
    name = "images_background_small1.zip"
    for folder, content in (
        ("corrupt", os.urandom(2048)),
        ("truncated", archive[: len(archive) // 2]),
    ):
        (tmp / folder).mkdir()
        (tmp / folder / name).write_bytes(content)
    (tmp / "damaged").mkdir()  # a member's compressed bytes altered
    with zipfile.ZipFile(tmp / "damaged" / name, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("s/Alphabet0/character01/a.png", _png(0) * 20)
    damaged = bytearray((tmp / "damaged" / name).read_bytes())
    damaged[60:70] = b"\xff" * 10
    (tmp / "damaged" / name).write_bytes(bytes(damaged))
    (tmp / "badpng").mkdir()
    with zipfile.ZipFile(tmp / "badpng" / name, "w") as zipped:
        zipped.writestr("s/Alphabet0/character01/a.png", b"not a png")
    for split in ("train", "test"):
        for c in range(3):
            folder = tmp / "badimages" / split / f"class{c}"
            folder.mkdir(parents=True)
            (folder / "0.png").write_bytes(b"not an image")
    (tmp / "badconfig").mkdir()
    (tmp / "badconfig" / "models.config").write_text("model_config_list { config {")
    run_dir = tmp / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt-1.index").write_bytes(b"damaged")
    config = get_config("maml", "sinusoid")
    config.update(hidden=[8], test_tasks=2, eval_batch_size=2, data_source="sinusoid")
    write_json(str(run_dir / "config.json"), config)
    for suffix, text in (
        ("badjson", "{not json"),
        ("list", "[]"),
        ("missing", json.dumps({"algorithm": "maml"})),
        ("n_way", json.dumps({**config, "n_way": 0})),
        ("nan", json.dumps({**config, "inner_lr": float("nan")})),
        ("type", json.dumps({**config, "meta_batch_size": "abc"})),
        ("optimizer", json.dumps({**config, "inner_optimizer": "bogus"})),
        ("steps", json.dumps({**config, "eval_inner_steps": 1000000})),
        (
            "moved",
            json.dumps(
                {**get_config("maml", "omniglot"), "data_dir": str(tmp / "moved")}
            ),
        ),
    ):
        variant = tmp / f"run_{suffix}"
        (variant / "checkpoints").mkdir(parents=True)
        (variant / "checkpoints" / "ckpt-1.index").write_bytes(b"damaged")
        (variant / "config.json").write_text(text)
    # A run that saved no checkpoint, its data gone: the checkpoint is named
    # before any data is read.
    (tmp / "run_unsaved").mkdir()
    write_json(
        str(tmp / "run_unsaved" / "config.json"),
        {**get_config("maml", "omniglot"), "data_dir": str(tmp / "gone")},
    )
    return {
        "tmp": str(tmp),
        "omni": str(omni),
        "run": str(run_dir),
        "python": sys.executable,
    }


def _words(text: str, paths: dict[str, str]) -> list[str]:
    return text.format(**paths).split()


def assert_one_line(result: dict, value: str) -> None:
    """Exit status 1 and one line on stderr (log lines aside) naming ``value``."""
    lines = [
        line
        for line in result["stderr"].splitlines()
        if line.strip() and not _LOG_LINE.match(line)
    ]
    assert "Traceback" not in result["stderr"], result["stderr"]
    assert result["code"] == 1, result
    assert len(lines) == 1, lines
    assert ": error: " in lines[0] and value in lines[0], lines[0]


@pytest.mark.parametrize("base,bad,value", TRAIN, ids=[case[1] for case in TRAIN])
def test_train_refuses_in_one_line(paths, base, bad, value):
    workdir = os.path.join(paths["tmp"], "runs", re.sub(r"\W+", "_", bad))
    args = [f"--workdir={workdir}", *_words(f"{base} {bad}", paths)]
    result = run("train", args)
    assert_one_line(result, value.format(**paths))
    assert not os.path.exists(workdir)  # refused before anything is written


@pytest.mark.parametrize("args,value", EVALUATE, ids=[case[0] for case in EVALUATE])
def test_evaluate_refuses_in_one_line(paths, args, value):
    words = _words(args, paths)
    assert_one_line(
        run("evaluate", [*words, "--cpu_threading=ops"]), value.format(**paths)
    )
    workdir = words[0].split("=", 1)[1]
    assert not os.path.exists(os.path.join(workdir, "results.json"))


def _in_fresh_process(binary: str, cases: list[list[str]]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.experiments.binary_runner",
            binary,
            json.dumps(cases),
        ],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def fresh_processes(paths):
    """The export and embed tables, each in one fresh process, and two runs of
    the real entry point, started together."""
    tmp = paths["tmp"]
    export = [
        _words(f"--workdir={{run}} --export_dir={tmp}/models/m {args}", paths)
        for args, _ in EXPORT
    ]
    embed = [
        _words(
            f"--data_dir={{omni}} --max_steps=1 --filters=4 --eval_tasks=2 "
            f"--output_dir={tmp}/embeddings/{index} {args}",
            paths,
        )
        for index, (args, _) in enumerate(EMBED)
    ]
    benchmark = [_words(f"{BENCHMARK_BASE} {args}", paths) for args, _ in BENCHMARK]
    started = {
        "export": _in_fresh_process("export", export),
        "embed": _in_fresh_process("embed", embed),
        "benchmark": _in_fresh_process("benchmark", benchmark),
        "train": subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.train",
                f"--workdir={tmp}/w",
                "--inner_lr=nan",
            ],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
        "evaluate": subprocess.Popen(
            [sys.executable, "-m", "experiments.evaluate"],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ),
    }
    finished = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        finished[name] = (process.returncode, stdout, stderr)
    return finished


def _table_results(finished, binary):
    code, stdout, stderr = finished[binary]
    assert code == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("index", range(len(EXPORT)), ids=[case[0] for case in EXPORT])
def test_export_refuses_in_one_line(paths, fresh_processes, index):
    result = _table_results(fresh_processes, "export")[index]
    assert_one_line(result, EXPORT[index][1].format(**paths))
    assert not os.path.exists(os.path.join(paths["tmp"], "models"))
    for word in _words(EXPORT[index][0], paths):  # no version written anywhere
        if word.startswith("--export_dir="):
            assert not os.path.isdir(word.split("=", 1)[1])


@pytest.mark.parametrize("index", range(len(EMBED)), ids=[case[0] for case in EMBED])
def test_embed_refuses_in_one_line(paths, fresh_processes, index):
    result = _table_results(fresh_processes, "embed")[index]
    assert_one_line(result, EMBED[index][1].format(**paths))
    assert not os.path.exists(os.path.join(paths["tmp"], "embeddings", str(index)))


@pytest.mark.parametrize(
    "index", range(len(BENCHMARK)), ids=[case[0] for case in BENCHMARK]
)
def test_benchmark_refuses_in_one_line(paths, fresh_processes, index):
    result = _table_results(fresh_processes, "benchmark")[index]
    assert_one_line(result, BENCHMARK[index][1].format(**paths))


def test_the_entry_point_prints_one_line_and_usage_only_for_a_missing_flag(
    fresh_processes,
):
    code, _, stderr = fresh_processes["train"]
    assert_one_line(
        {"code": code, "stderr": stderr}, "--inner_lr must be a finite number, got nan"
    )
    code, _, stderr = fresh_processes["evaluate"]  # no --workdir: the usage helps
    assert code == 1 and "Traceback" not in stderr
    assert "Evaluates a training workdir" in stderr
    assert stderr.rstrip().endswith("--workdir is required")


@pytest.mark.parametrize("binary", ["train", "evaluate"])
def test_a_folder_this_user_cannot_write_is_refused(paths, monkeypatch, binary):
    """As root every folder is writable, so os.access says what a user would see."""
    from experiments import checks

    readonly = os.path.join(paths["tmp"], "readonly")
    denied = {readonly, paths["run"]}
    real_access = os.access
    monkeypatch.setattr(
        checks.os,
        "access",
        lambda path, mode: path not in denied and real_access(path, mode),
    )
    if binary == "train":
        os.makedirs(readonly, exist_ok=True)
        args = [f"--workdir={readonly}/run", *_words(SINUSOID, paths)]
        value = f"--workdir={readonly}/run: {readonly} is not writable by this user"
    else:
        args = [f"--workdir={paths['run']}"]
        value = f"--workdir={paths['run']} is not writable by this user"
    assert_one_line(run(binary, args), value)


def test_the_memory_estimate_is_its_formula_and_refuses_only_above_the_machine():
    """Max-pool conv4, 64 filters, 28x28: per image 3 * 64 * (28^2 + 14^2 + 7^2
    + 4^2) kept by the stride-1 convolutions, batch norms and ReLUs, and 64 *
    (14^2 + 7^2 + 4^2 + 2^2) by the poolings; a meta-batch of 32 5-way tasks
    of 1 + 1 images holds 32 * 10 images and one task's 10 forward passes."""
    from experiments import memory

    config = {**get_config("maml", "omniglot"), "pooling": "max", "eval_q_query": 1}
    forward = 3 * 64 * (784 + 196 + 49 + 16) + 64 * (196 + 49 + 16 + 4)
    assert memory.forward_numbers(config, "conv4", (28, 28, 1)) == forward
    needed = (32 * 10 * 784 + 10 * forward) * 4
    assert memory.phase_bytes(32, 5, 2, 784, forward) == needed
    memory.check_memory(config, "conv4", (28, 28, 1), available=needed)
    with pytest.raises(ValueError) as refused:
        memory.check_memory(config, "conv4", (28, 28, 1), available=needed - 1)
    assert str(refused.value).startswith(
        "--meta_batch_size=32, --n_way=5, --k_shot=1, --q_query=1, --image_size=28: "
        "a meta-training batch of 32 tasks needs at least"
    )
    assert memory.format_bytes(needed - 1) in str(refused.value)
