"""Runs the binaries on bad inputs and sorts what each does.

  python -m experiments.results.bad_inputs [--jobs=2] [--timeout=180] [--only=train]

Each case changes one input of a small valid run (Omniglot from
$TFMETA_OMNIGLOT_DIR, default ../shared/data/omniglot; a tiny sinusoid
run trained first for evaluate and export) and runs the binary as a user
would, in a fresh process with its address space capped (``--max_memory_gb``,
so that a setting which would exhaust the machine's memory fails instead).
Outcomes:

- clear: a non-zero exit with one line on stderr (TensorFlow's own start-up
  log lines aside) that names the bad value;
- usage: a required flag missing: the usage text, then the message;
- unclear: a non-zero exit, no traceback, but more lines (e.g. the usage
  text) or a message not naming the value;
- traceback, crash (killed by a signal), hang (no exit within
  ``--timeout`` seconds), silent (exit 0: the bad input was accepted).

Prints one line per case and the counts.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[2]
FLAGS = flags.FLAGS
flags.DEFINE_integer("jobs", 2, "cases run side by side")
flags.DEFINE_integer("timeout", 180, "seconds before a case counts as a hang")
flags.DEFINE_float("max_memory_gb", 8.0, "address-space cap of each case's process")
flags.DEFINE_string("only", None, "run only the cases of this binary")

OMNI = "--data_dir={omni} --num_steps=1 --meta_batch_size=2 --filters=4 --val_tasks=0 --test_tasks=2 --eval_batch_size=2 --noevaluate --rotations=none"
SINE = "--dataset=sinusoid --hidden=8 --k_shot=5 --num_steps=1 --meta_batch_size=2 --val_tasks=0 --test_tasks=2 --eval_batch_size=2 --noevaluate"
EMBED = "--data_dir={omni} --max_steps=1 --filters=4 --batch_size=16 --eval_tasks=2"
BENCH = "--algorithms=maml --xla=off --repeats=1 --steps=1"

# (binary, base arguments, the bad input, what the message must name)
# fmt: off
CASES = [
    ("train", OMNI, "--inner_lr=nan", "nan"),
    ("train", OMNI, "--inner_lr=inf", "inf"),
    ("train", OMNI, "--inner_lr=-0.1", "-0.1"),
    ("train", OMNI, "--outer_lr=nan", "nan"),
    ("train", OMNI, "--outer_lr=-inf", "inf"),
    ("train", OMNI, "--outer_lr=0", "outer_lr"),
    ("train", OMNI, "--final_outer_lr=nan --outer_optimizer=cosine_adam", "nan"),
    ("train", OMNI, "--outer_lr_decay_rate=0 --outer_optimizer=step_adam", "outer_lr_decay_rate"),
    ("train", OMNI, "--gradient_clip_norm=-1", "-1"),
    ("train", OMNI, "--inner_beta1=1.5 --inner_optimizer=adam", "1.5"),
    ("train", OMNI, "--filters=0", "filters=0"),
    ("train", OMNI, "--filters=-3", "-3"),
    ("train", OMNI, "--depth=0", "depth=0"),
    ("train", OMNI, "--depth=-1", "-1"),
    ("train", SINE, "--hidden=0", "0"),
    ("train", SINE, "--hidden=-5", "-5"),
    ("train", SINE, "--hidden=8,abc", "abc"),
    ("train", OMNI, "--outer_optimizer=bogus", "bogus"),
    ("train", OMNI, "--inner_optimizer=bogus", "bogus"),
    ("train", OMNI, "--pooling=bogus", "bogus"),
    ("train", OMNI, "--adapt_variables=bogus", "bogus"),
    ("train", OMNI, "--task_weighting=bogus", "bogus"),
    ("train", OMNI, "--task_execution=bogus", "bogus"),
    ("train", OMNI, "--rotations=bogus", "bogus"),
    ("train", OMNI, "--split_protocol=bogus", "bogus"),
    ("train", OMNI, "--model=bogus", "bogus"),
    ("train", OMNI, "--model=mlp", "mlp"),
    ("train", SINE, "--model=conv4", "conv4"),
    ("train", OMNI, "--algorithm=bogus", "bogus"),
    ("train", OMNI, "--dataset=bogus", "bogus"),
    ("train", OMNI, "--config=bogus", "bogus"),
    ("train", OMNI, "--config=maml_omniglot:30way", "30way"),
    ("train", OMNI, "--image_size=0", "image_size"),
    ("train", OMNI, "--image_size=-4", "-4"),
    ("train", OMNI, "--image_size=200000", "200000"),
    ("train", OMNI, "--image_size=2000", "2000"),
    ("train", OMNI, "--n_way=0", "n_way"),
    ("train", OMNI, "--n_way=abc", "abc"),
    ("train", OMNI, "--n_way=1000000", "1000000"),
    ("train", OMNI, "--k_shot=-1", "-1"),
    ("train", OMNI, "--k_shot=1000000000", "1000000000"),
    ("train", SINE, "--k_shot=1000000000", "1000000000"),
    ("train", OMNI, "--q_query=0", "q_query"),
    ("train", SINE, "--eval_q_query=1000000000", "1000000000"),
    ("train", OMNI, "--train_k_shot=0", "train_k_shot"),
    ("train", OMNI, "--meta_batch_size=0", "meta_batch_size"),
    ("train", OMNI, "--meta_batch_size=100000000", "100000000"),
    ("train", SINE, "--meta_batch_size=100000000", "100000000"),
    ("train", OMNI, "--eval_batch_size=0", "eval_batch_size"),
    ("train", OMNI, "--eval_batch_size=100000000 --evaluate --test_tasks=100000000", "100000000"),
    ("train", OMNI, "--inner_steps=1000000", "1000000"),
    ("train", OMNI, "--inner_steps=500", "500"),
    ("train", OMNI, "--algorithm=maml_plus_plus --inner_steps=200 --nounroll_inner_loop", "200"),
    ("train", OMNI, "--algorithm=leo --dataset=embeddings --data_dir={tmp}/absent --embedding_dataset=x --inner_steps=200", "200"),
    ("train", OMNI, "--eval_inner_steps=1000000", "1000000"),
    ("train", OMNI, "--inner_steps=-1", "-1"),
    ("train", OMNI, "--report_inner_steps=-2", "-2"),
    ("train", OMNI, "--num_steps=-1", "num_steps"),
    ("train", OMNI, "--test_tasks=0", "test_tasks"),
    ("train", OMNI, "--val_tasks=-1", "val_tasks"),
    ("train", OMNI, "--log_every=0", "log_every"),
    ("train", OMNI, "--eval_every=0 --val_tasks=2", "eval_every"),
    ("train", OMNI, "--checkpoint_every=0", "checkpoint_every"),
    ("train", OMNI, "--noisy_task_fraction=2", "2"),
    ("train", OMNI, "--second_order_steps=-1", "-1"),
    ("train", OMNI, "--recompute_steps=-1 --recompute", "-1"),
    ("train", OMNI, "--algorithm=reptile --inner_batch_size=0", "inner_batch_size"),
    ("train", OMNI, "--algorithm=protonet --distance=bogus", "bogus"),
    ("train", OMNI, "--algorithm=protonet --distance=cosine --temperature=0", "temperature"),
    ("train", OMNI, "--algorithm=protonet --train_n_way=1", "train_n_way"),
    ("train", OMNI, "--algorithm=meta_sgd --meta_sgd_init=bogus", "bogus"),
    ("train", OMNI, "--algorithm=maml_plus_plus --statistics_momentum=0", "statistics_momentum"),
    ("train", OMNI, "--algorithm=maml_plus_plus --multi_step_loss_steps=-1", "-1"),
    ("train", OMNI, "--algorithm=leo --dataset=embeddings --data_dir={tmp}/absent --embedding_dataset=x --num_latents=0", "num_latents"),
    ("train", OMNI, "--algorithm=leo --dataset=embeddings --data_dir={tmp}/absent --embedding_dataset=x --dropout_rate=2", "dropout_rate"),
    ("train", OMNI, "--algorithm=leo --dataset=embeddings --data_dir={tmp}/absent --embedding_dataset=x --kl_estimator=bogus", "bogus"),
    ("train", OMNI, "--dataset=embeddings --data_dir={tmp}/absent --embedding_dataset=x --rotations=none", "absent"),
    ("train", OMNI, "--dataset=folder --data_dir=", "data_dir"),
    ("train", OMNI, "--dataset=folder --data_dir={tmp}/folder --channels=0", "channels"),
    ("train", OMNI, "--dataset=folder --data_dir={tmp}/folder --channels=2", "channels"),
    ("train", OMNI, "--dataset=folder --data_dir={tmp}/badimages --val_tasks=0", "badimages"),
    ("train", SINE, "--tasks_within_alphabet", "sinusoid"),
    ("train", OMNI, "--pretrained_backbone={tmp}/absent --pooling=max", "absent"),
    ("train", OMNI, "--data_dir={tmp}/absent", "absent"),
    ("train", OMNI, "--data_dir={tmp}/afile", "afile"),
    ("train", OMNI, "--data_dir={tmp}/corrupt", "corrupt"),
    ("train", OMNI, "--data_dir={tmp}/truncated", "truncated"),
    ("train", OMNI, "--data_dir={tmp}/badpng", "badpng"),
    ("train", OMNI, "--data_dir={tmp}/emptyzip", "emptyzip"),
    ("train", OMNI, "--workdir={tmp}/afile", "afile"),
    ("train", OMNI, "--workdir={tmp}/afile/run", "afile"),
    ("train", OMNI, "--workdir={tmp}/readonly/run", "readonly"),
    ("train", OMNI, "--workdir=", "workdir"),
    ("train", OMNI, "--cpu_threading=bogus", "bogus"),
    ("train", OMNI, "--malloc_arenas=0", "malloc_arenas"),
    ("train", OMNI, "--strategy=mirrored --cpu_replicas=-1", "-1"),
    ("train", OMNI, "--strategy=mirrored --cpu_replicas=2 --meta_batch_size=3", "3"),
    ("train", OMNI, "--strategy=mirrored --cpu_replicas=100000", "100000"),
    ("train", OMNI, "--no_such_flag=1", "no_such_flag"),
    ("evaluate", "", "", "workdir"),
    ("evaluate", "", "--workdir={tmp}/absent", "absent"),
    ("evaluate", "", "--workdir={tmp}/afile", "afile"),
    ("evaluate", "", "--workdir={run}_badjson", "config.json"),
    ("evaluate", "", "--workdir={run}_list", "config.json"),
    ("evaluate", "", "--workdir={run}_edited", "n_way"),
    ("evaluate", "", "--workdir={run}_nan", "nan"),
    ("evaluate", "", "--workdir={run}_badname", "bogus"),
    ("evaluate", "", "--workdir={run}_missing", "config.json"),
    ("evaluate", "", "--workdir={run}_hugesteps", "1000000"),
    ("evaluate", "", "--workdir={run}_corrupt", "ckpt"),
    ("evaluate", "", "--workdir={run}_moved", "moved"),
    ("evaluate", "", "--workdir={run} --checkpoint=bogus", "bogus"),
    ("export", "--workdir={run}", "", "export_dir"),
    ("export", "--workdir={run}", "--export_dir={tmp}/afile", "afile"),
    ("export", "--workdir={run}", "--export_dir={tmp}/afile/model", "afile"),
    ("export", "--workdir={run}", "--export_dir={tmp}/readonly/model", "readonly"),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/3", "3"),
    ("export", "--workdir={run}", "--export_dir={tmp}/badconfig/model", "models.config"),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/m --models_config={tmp}", "models_config"),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/m --models_config={tmp}/afile/models.config", "afile"),
    ("export", "--workdir={run}", '--export_dir={tmp}/models/m --model_name=a"b', 'a"b'),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/m --model_name=a/b", "a/b"),
    ("export", "--workdir={run}", '--export_dir={tmp}/models/m --base_path=x"y', 'x"y'),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/m --max_support_examples=0", "max_support_examples"),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/m --max_abs_input=nan", "nan"),
    ("export", "--workdir={run}", "--export_dir={tmp}/models/m --max_image_pixels=-1", "-1"),
    ("export", "--export_dir={tmp}/models/m", "--workdir={run}_edited", "n_way"),
    ("export", "--export_dir={tmp}/models/m", "--workdir={run}_corrupt", "ckpt"),
    ("export", "--export_dir={tmp}/models/m", "--workdir={tmp}/afile", "afile"),
    ("embed", EMBED, "", "output_dir"),
    ("embed", EMBED, "--output_dir={tmp}/afile", "afile"),
    ("embed", EMBED, "--output_dir={tmp}/afile/out", "afile"),
    ("embed", EMBED, "--output_dir={tmp}/readonly/out", "readonly"),
    ("embed", EMBED, "--output_dir={out} --filters=0", "filters"),
    ("embed", EMBED, "--output_dir={out} --depth=0", "depth"),
    ("embed", EMBED, "--output_dir={out} --depth=-2", "-2"),
    ("embed", EMBED, "--output_dir={out} --image_size=0", "image_size"),
    ("embed", EMBED, "--output_dir={out} --image_size=200000", "200000"),
    ("embed", EMBED, "--output_dir={out} --batch_size=0", "batch_size"),
    ("embed", EMBED, "--output_dir={out} --learning_rate=nan", "nan"),
    ("embed", EMBED, "--output_dir={out} --learning_rate=-1", "-1"),
    ("embed", EMBED, "--output_dir={out} --max_steps=0 --epochs=0", "epochs"),
    ("embed", EMBED, "--output_dir={out} --eval_tasks=0", "eval_tasks"),
    ("embed", EMBED, "--output_dir={out} --split_protocol=bogus", "bogus"),
    ("embed", EMBED, "--output_dir={out} --embedding_dataset=", "embedding_dataset"),
    ("embed", EMBED, "--output_dir={out} --embedding_crop=../x", "../x"),
    ("embed", EMBED, "--output_dir={out} --data_dir={tmp}/corrupt", "corrupt"),
    ("embed", EMBED, "--output_dir={out} --data_dir={tmp}/afile", "afile"),
    ("benchmark", BENCH, "--algorithms=bogus", "bogus"),
    ("benchmark", BENCH, "--n_way=0", "n_way"),
    ("benchmark", BENCH, "--repeats=0", "repeats"),
    ("benchmark", BENCH, "--xla=sometimes", "xla"),
    ("benchmark", BENCH, "--output_json={tmp}/absent/speed.json", "absent"),
    ("benchmark", BENCH, "--torch_python={tmp}/afile", "afile"),
    ("benchmark", BENCH, "--recompute_steps=1", "recompute_steps"),
]
# fmt: on

_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|"
    r"To enable the following instructions|(INFO|WARNING):tensorflow:)"
)


def message_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's and absl's log lines."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not _LOG_LINE.match(line)
    ]


def classify(returncode: int | None, stderr: str, value: str) -> str:
    if returncode is None:
        return "hang"
    if "Traceback (most recent call last)" in stderr:
        return "traceback"
    if returncode < 0 or returncode >= 128:
        return "crash"
    if returncode == 0:
        return "silent"
    lines = message_lines(stderr)
    if len(lines) == 1 and value in lines[0]:
        return "clear"
    if lines and value in lines[-1] and "required" in lines[-1]:
        return "usage"  # a required flag missing: the usage text, then the message
    return "unclear"


def _tiny_png(seed: int) -> bytes:
    import numpy as np
    import tensorflow as tf

    pixels = (np.random.default_rng(seed).random((20, 20, 1)) > 0.5).astype(np.uint8)
    return tf.io.encode_png(pixels * 255).numpy()


def prepare(tmp: pathlib.Path, omni: str) -> dict[str, str]:
    """The files the cases name: a file, damaged archives, image folders, a
    trained run and damaged copies of it, a read-only folder."""
    (tmp / "afile").write_text("not a folder\n")
    (tmp / "readonly").mkdir()
    (tmp / "readonly").chmod(0o555)
    small = pathlib.Path(omni) / "images_background_small1.zip"
    for name, content in (
        ("corrupt", os.urandom(4096)),
        ("truncated", small.read_bytes()[: small.stat().st_size // 2]),
    ):
        (tmp / name).mkdir()
        (tmp / name / small.name).write_bytes(content)
    (tmp / "emptyzip").mkdir()
    zipfile.ZipFile(tmp / "emptyzip" / small.name, "w").close()
    (tmp / "badpng").mkdir()
    with zipfile.ZipFile(tmp / "badpng" / small.name, "w") as archive:
        for c in range(30):
            for d in range(20):
                archive.writestr(
                    f"s/Alpha{c % 3}/character{c:02d}/{d}.png", b"not a png"
                )
    for root, content in (("folder", None), ("badimages", b"not an image")):
        for split in ("train", "test"):
            for c in range(6):
                folder = tmp / root / split / f"class{c}"
                folder.mkdir(parents=True)
                for i in range(4):
                    (folder / f"{i}.png").write_bytes(content or _tiny_png(c * 10 + i))
    (tmp / "badconfig").mkdir()
    (tmp / "badconfig" / "models.config").write_text(
        "model_config_list { config { name: 'x' "
    )
    run = tmp / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.train",
            f"--workdir={run}",
            *SINE.replace("--noevaluate", "--num_steps=2").split(),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the tiny run failed:\n{done.stderr[-3000:]}")
    config = json.loads((run / "config.json").read_text())
    for suffix, text in (
        ("badjson", "{not json"),
        ("list", "[]"),
        ("edited", json.dumps({**config, "n_way": 0})),
        ("nan", json.dumps({**config, "inner_lr": float("nan")})),
        ("badname", json.dumps({**config, "inner_optimizer": "bogus"})),
        ("missing", json.dumps({"algorithm": "maml"})),
        ("hugesteps", json.dumps({**config, "eval_inner_steps": 1000000})),
        (
            "moved",
            json.dumps(
                {
                    **config,
                    "dataset": "omniglot",
                    "data_dir": str(tmp / "moved"),
                    "k_shot": 1,
                }
            ),
        ),
        ("corrupt", None),
    ):
        copy = tmp / f"run_{suffix}"
        shutil.copytree(run, copy)
        if text is None:
            for data in copy.rglob("*.data-*"):
                data.write_bytes(data.read_bytes()[:40])
        else:
            (copy / "config.json").write_text(text)
    return {"tmp": str(tmp), "omni": omni, "run": str(run)}


def _limit_memory(max_bytes: int):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))

    return limit


def run_case(index: int, case, paths: dict[str, str]) -> tuple[str, float, str]:
    binary, base, bad, value = case
    out = os.path.join(paths["tmp"], "out", str(index))
    words = f"{base} {bad}".format(out=out, **paths).split()
    if binary == "train" and not any(w.startswith("--workdir") for w in words):
        words.append(f"--workdir={out}")
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", f"experiments.{binary}", *words],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            timeout=FLAGS.timeout,
            preexec_fn=_limit_memory(int(FLAGS.max_memory_gb * 2**30)),
            check=False,
        )
        returncode, stderr = done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        returncode = None
        stderr = (expired.stderr or b"").decode(errors="replace")
    seconds = time.perf_counter() - start
    outcome = classify(returncode, stderr, value)
    lines = message_lines(stderr)
    if outcome == "traceback":
        shown = [line for line in lines if line and not line.startswith(" ")][-1:]
    else:
        shown = (
            lines[-1:]
            if outcome != "unclear"
            else [f"({len(lines)} lines) {lines[-1] if lines else ''}"]
        )
    return outcome, seconds, (shown or [""])[0][:200]


def main(argv):
    del argv
    omni = os.environ.get("TFMETA_OMNIGLOT_DIR") or str(
        REPO.parent / "shared" / "data" / "omniglot"
    )
    cases = [c for c in CASES if FLAGS.only in (None, c[0])]
    if os.geteuid() == 0:  # root writes into a read-only folder: nothing to refuse
        cases = [c for c in cases if "readonly" not in c[2]]
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare(pathlib.Path(tmp), omni)
        with concurrent.futures.ThreadPoolExecutor(FLAGS.jobs) as pool:
            futures = [
                pool.submit(run_case, i, case, paths) for i, case in enumerate(cases)
            ]
            for case, future in zip(cases, futures):
                outcome, seconds, line = future.result()
                counts[outcome] = counts.get(outcome, 0) + 1
                print(
                    f"{outcome:9s} {seconds:6.1f}s {case[0]:8s} {case[2] or '(none)'}: {line}",
                    flush=True,
                )
        (pathlib.Path(tmp) / "readonly").chmod(0o755)
    print(
        f"{len(cases)} bad inputs: "
        + ", ".join(
            f"{counts.get(k, 0)} {k}"
            for k in (
                "clear",
                "usage",
                "unclear",
                "traceback",
                "hang",
                "crash",
                "silent",
            )
        )
    )


if __name__ == "__main__":
    app.run(main)
