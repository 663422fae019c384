"""Omniglot N-way K-shot with every learner given the same training wall time.

  python -m experiments.results.equal_time --out=/tmp/tfmeta_runs/compare --minutes=4
  python -m experiments.results.summarize /tmp/tfmeta_runs/compare

Each row is one ``experiments.train`` run on held-out characters (the
default split of the data found: the two minimal background sets give a
seeded split by character), meta-tested on the 600 fixed test tasks. Its
step count comes from a short pilot run (``--pilot_steps``, no validation,
in ``<out>/.pilot/``): num_steps = minutes * 60 / (seconds per step after
compilation, read from the pilot's last log window), so schedules over the
run (cosine, multi-step loss annealing) span the run actually trained.
Meta-validation runs 4 times per run (its time is not in the budget).

The rows in ``BACKBONE_ROWS`` start from a conv4 backbone trained by
classification on the meta-train classes (``experiments.embed``,
``--backbone_minutes`` of its epochs' time, reported; on the split that
``--train_flags`` name): the nearest-centroid rule uses it as it is (no
meta-training), the other learners meta-train from it for the rest of the
budget (the seed algorithms' recipes: "maml+pretrained", "fomaml+pretrained",
"reptile+pretrained"), and the ``EMBEDDING_ROWS`` (LEO, and the nearest
centroid beside it) run on the embedding files it writes, with tasks within
one alphabet under ``--split_protocol=alphabet``.

A row whose ``results.json`` exists is skipped, so a stopped comparison
continues where it stopped. ``--rows`` picks rows, ``--seeds`` repeats them.
``--steps=row=N,...`` and ``--backbone_steps`` fix a budget in steps instead
(e.g. more seeds of rows measured before, with the steps those got, so that a
busy machine changes their wall time, not their budget); ``--train_flags``
are passed to every training run (e.g. ``--transductive``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Folder of the runs (one workdir per row).")
flags.DEFINE_float("minutes", 4.0, "Training wall time per row.")
flags.DEFINE_float("backbone_minutes", 2.0, "Of that, the embedding backbone's.")
flags.DEFINE_list("rows", [], "Rows to run (default: all).")
flags.DEFINE_list("seeds", ["0"], "Seeds; each row runs once per seed.")
flags.DEFINE_integer("n_way", 5, "Classes per task.")
flags.DEFINE_integer("k_shot", 1, "Support examples per class.")
flags.DEFINE_integer("pilot_steps", 30, "Steps of the pilot run.")
flags.DEFINE_list("steps", [], "row=N: that row trains N meta-steps (no pilot).")
flags.DEFINE_integer("backbone_steps", 0, "Batches of the backbone; 0: by time.")
flags.DEFINE_list("train_flags", [], "Flags added to every training run.")

MPP = ["--algorithm=maml_plus_plus"]
ROWS: dict[str, list[str]] = {
    "maml": ["--algorithm=maml"],
    "maml_plus_plus": MPP,
    "maml_plus_plus-msl": [*MPP, "--nomulti_step_loss"],
    "maml_plus_plus-lslr": [*MPP, "--nolearned_step_sizes"],
    "maml_plus_plus-bnwb": [*MPP, "--noper_step_batch_norm"],
    "maml_plus_plus-cosine": [*MPP, "--outer_optimizer=adam"],
    "maml_plus_plus+da": [*MPP, "--first_order_steps_of_run=0.5"],
    "maml_plus_plus+bnrs": [*MPP, "--running_statistics"],
    "meta_sgd": ["--algorithm=meta_sgd"],
    "protonet": ["--algorithm=protonet"],
    "proto_maml": ["--algorithm=proto_maml"],
    "pretrained_maml": ["--algorithm=maml", "--pooling=max"],
    "pretrained_protonet": ["--algorithm=protonet"],
    "nearest_centroid": ["--algorithm=nearest_centroid"],
    # The seed algorithms' recipes (tfmeta/configs: maml_omniglot, reptile_omniglot).
    "maml+pretrained": [
        "--algorithm=unicorn_maml",
        "--config=maml_omniglot:pretrained",
    ],
    "fomaml+pretrained": [
        "--algorithm=unicorn_maml",
        "--config=maml_omniglot:pretrained_first_order",
    ],
    "reptile+pretrained": [
        "--algorithm=unicorn_reptile",
        "--config=reptile_omniglot:pretrained",
    ],
    # On the backbone's embedding files.
    "leo": ["--algorithm=leo", "--dataset=embeddings"],
    "nearest_centroid_embeddings": [
        "--algorithm=nearest_centroid",
        "--dataset=embeddings",
    ],
}
EMBEDDING_ROWS = ("leo", "nearest_centroid_embeddings")
BACKBONE_ROWS = (
    "pretrained_maml",
    "pretrained_protonet",
    "nearest_centroid",
    "maml+pretrained",
    "fomaml+pretrained",
    "reptile+pretrained",
    *EMBEDDING_ROWS,
)
NOISE = re.compile(r"^(I0000|W0000|E0000|WARNING|To enable)")


def run(command: list[str], log: pathlib.Path) -> str:
    """Runs ``command``, echoing and logging its output; returns the output."""
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(output)
    for line in output.splitlines():
        if not NOISE.match(line):
            print("  " + line, flush=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")
    return output


def seconds_per_step(output: str) -> float:
    rates = re.findall(r"([0-9.]+) steps/s", output)
    if not rates:
        raise SystemExit("the pilot printed no step rate")
    return 1.0 / float(rates[-1])


def train_command(row: str, seed: str, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments.train",
        "--dataset=omniglot",
        f"--n_way={FLAGS.n_way}",
        f"--k_shot={FLAGS.k_shot}",
        f"--seed={seed}",
        "--test_tasks=600",
        *ROWS[row],
        *FLAGS.train_flags,
        *extra,
    ]


def split_flags() -> list[str]:
    """The class-split flags among ``--train_flags``, which the backbone shares."""
    names = ("--split_protocol=", "--split_seed=")
    return [flag for flag in FLAGS.train_flags if flag.startswith(names)]


def backbone(out: pathlib.Path, seed: str) -> tuple[str, float]:
    """experiments.embed's backbone for ``backbone_minutes``; (folder, minutes)."""
    folder = out / f"backbone_seed{seed}"
    if not (folder / "wall_seconds.txt").exists() and FLAGS.backbone_steps:
        steps = FLAGS.backbone_steps
    elif not (folder / "wall_seconds.txt").exists():
        start = time.perf_counter()
        run(
            [
                sys.executable,
                "-m",
                "experiments.embed",
                f"--output_dir={out / '.pilot' / 'backbone'}",
                "--max_steps=50",
                f"--seed={seed}",
                "--format=npz",
                *split_flags(),
            ],
            out / ".pilot" / "backbone.log",
        )
        per_step = (time.perf_counter() - start) / 50  # an upper bound
        steps = max(int(FLAGS.backbone_minutes * 60 / per_step), 50)
    if not (folder / "wall_seconds.txt").exists():
        start = time.perf_counter()
        run(
            [
                sys.executable,
                "-m",
                "experiments.embed",
                f"--output_dir={folder}",
                f"--max_steps={steps}",
                f"--seed={seed}",
                "--format=npz",
                *split_flags(),
            ],
            folder.with_suffix(".log"),
        )
        (folder / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    minutes = float((folder / "wall_seconds.txt").read_text()) / 60
    return str(folder), minutes


def run_row(out: pathlib.Path, row: str, seed: str) -> None:
    workdir = out / f"{row}_seed{seed}"
    if (workdir / "results.json").exists():
        print(f"{workdir.name}: done, skipped", flush=True)
        return
    extra, minutes = [], FLAGS.minutes
    if row in BACKBONE_ROWS:
        folder, backbone_minutes = backbone(out, seed)
        extra.append(
            f"--data_dir={folder}"
            if row in EMBEDDING_ROWS
            else f"--pretrained_backbone={folder}"
        )
        if row in EMBEDDING_ROWS and "--split_protocol=alphabet" in FLAGS.train_flags:
            extra.append("--tasks_within_alphabet")  # its tasks, as the images'
        minutes = max(FLAGS.minutes - backbone_minutes, 0.0)
    fixed = dict(item.split("=", 1) for item in FLAGS.steps)
    if row.startswith("nearest_centroid"):
        steps = 0
    elif row in fixed:
        steps = int(fixed[row])
    elif not workdir.exists():
        pilot = out / ".pilot" / workdir.name
        output = run(
            train_command(
                row,
                seed,
                [
                    *extra,
                    f"--workdir={pilot}",
                    f"--num_steps={FLAGS.pilot_steps}",
                    "--log_every=10",
                    "--val_tasks=0",
                    "--noevaluate",
                ],
            ),
            out / ".pilot" / f"{workdir.name}.log",
        )
        steps = max(int(minutes * 60 / seconds_per_step(output)), 1)
    else:  # a stopped run: its own config holds the step count
        steps = json.loads((workdir / "config.json").read_text())["num_steps"]
    every = max(steps // 4, 1)
    run(
        train_command(
            row,
            seed,
            [
                *extra,
                f"--workdir={workdir}",
                f"--num_steps={steps}",
                f"--eval_every={every}",
                f"--checkpoint_every={every}",
                f"--log_every={max(every // 5, 1)}",
                "--val_tasks=100",
            ],
        ),
        workdir.with_suffix(".log"),
    )


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    out = pathlib.Path(FLAGS.out)
    rows = FLAGS.rows or list(ROWS)
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise app.UsageError(f"unknown rows {unknown}; expected some of {list(ROWS)}")
    os.environ.setdefault(
        "TFMETA_OMNIGLOT_DIR",
        str(
            pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"
        ),
    )
    for seed in FLAGS.seeds:
        for row in rows:
            run_row(out, row, seed)


if __name__ == "__main__":
    app.run(main)
