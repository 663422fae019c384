"""Pictures of trained runs, as PNG files (matplotlib, the ``pictures`` extra:
``pip install -e '.[pictures]'``).

  python -m experiments.results.pictures --sinusoid_workdir=/tmp/tfmeta_runs/sinusoid \
      --out_dir=docs/figures
  python -m experiments.results.pictures --curves=/tmp/tfmeta_cmp --out_dir=docs/figures

``sinusoid_fits.png`` (``--sinusoid_workdir``, a regression run of any
fast-weight learner): the MAML paper's Figure 2. For a few test tasks
(their amplitude and phase those of the run's first meta-test tasks, the K
support points drawn with the same seed) the true sine, the support points and
the model's prediction before adaptation and after 1 and 10 steps, with each
task's MSE on a dense grid.

``accuracy_curves.png`` (``--curves``, folders of run workdirs at any depth,
e.g. ``experiments.results.equal_time`` outputs): a panel per task setting
(way, shot, held-out characters or alphabets), with the meta-validation
accuracy of each run against its meta-steps (its ``validation.json``; the
seeds of one row, ``<row>_seed<N>``, in one colour) and the served meta-test
accuracy and its 95% interval at the step of the checkpoint tested.
"""

from __future__ import annotations

import collections
import json
import pathlib
import re

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("sinusoid_workdir", None, "A trained sinusoid run to draw.")
flags.DEFINE_list(
    "curves", [], "Folders of run workdirs (at any depth) to draw curves of."
)
flags.DEFINE_string("out_dir", "docs/figures", "Where the PNG files go.")
flags.DEFINE_integer("tasks", 3, "Sinusoid tasks drawn.")
flags.DEFINE_list("steps", ["1", "10"], "Adaptation steps drawn (besides 0).")


def pyplot():
    """matplotlib's pyplot on a file-only backend, or one clear line."""
    try:
        import matplotlib
    except ImportError as error:
        raise app.UsageError(
            "pictures need matplotlib: pip install -e '.[pictures]'"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sinusoid_fits(workdir: str, out: pathlib.Path, tasks: int, steps: list[int]) -> str:
    """Draws ``sinusoid_fits.png``; returns its path."""
    import tensorflow as tf

    from experiments.export import restore_learner
    from tfmeta.data.sinusoid import sinusoid_function, sinusoid_task_parameters
    from tfmeta.training import Workdir

    plt = pyplot()
    config = Workdir(workdir).read_config()
    if config["dataset"] != "sinusoid":
        raise app.UsageError(
            f"--sinusoid_workdir={workdir} is a {config['dataset']} run"
        )
    learner, path = restore_learner(workdir, config, "best")
    k = config["k_shot"]
    seed = config["test_seed"]
    amplitudes, phases = sinusoid_task_parameters(seed, range(tasks))
    rng = np.random.default_rng(seed)
    grid = np.linspace(-5.0, 5.0, 200, dtype=np.float32)[:, None]
    figure, axes = plt.subplots(1, tasks, figsize=(4.2 * tasks, 3.4), squeeze=False)
    colors = {
        0: "tab:gray",
        **{s: c for s, c in zip(steps, ("tab:green", "tab:red", "tab:purple"))},
    }
    for index, axis in enumerate(axes[0]):
        amplitude, phase = amplitudes[index], phases[index]
        support_x = rng.uniform(-5.0, 5.0, size=(k, 1)).astype(np.float32)
        support_y = sinusoid_function(amplitude, phase, support_x).astype(np.float32)
        truth = sinusoid_function(amplitude, phase, grid)
        axis.plot(grid, truth, color="black", linewidth=2, label="true function")
        axis.scatter(
            support_x,
            support_y,
            color="black",
            marker="^",
            zorder=5,
            label=f"{k} support points",
        )
        for count in [0, *steps]:
            fast = learner.adapt(tf.constant(support_x), tf.constant(support_y), count)
            predicted = learner.predict(fast, tf.constant(grid), None, count).numpy()
            mse = float(np.mean((predicted - truth) ** 2))
            label = (
                "before adaptation"
                if count == 0
                else f"after {count} step{'s' * (count != 1)}"
            )
            axis.plot(
                grid,
                predicted,
                color=colors[count],
                linestyle="--" if count == 0 else "-",
                label=f"{label} (MSE {mse:.2f})",
            )
        axis.set_title(f"amplitude {amplitude:.2f}, phase {phase:.2f}")
        axis.set_ylim(-6, 6)
        axis.legend(fontsize=7, loc="lower left")
    steps_trained = int(path.rsplit("-", 1)[-1])
    figure.suptitle(
        f"{config['algorithm']} on K={k} sinusoid regression, {config['inner_steps']} "
        f"inner step(s) in training, checkpoint at meta-step {steps_trained}"
    )
    figure.tight_layout()
    target = out / "sinusoid_fits.png"
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return str(target)


def curve_panels(roots: list[str]) -> dict[str, list[tuple[str, pathlib.Path]]]:
    """The classification runs below ``roots`` (any depth: a folder holding a
    ``validation.json``), grouped by the tasks they were tested on: panel
    title -> [(label, run folder)]. A label is the run's path below its root,
    without a ``_seed0`` suffix."""
    panels: dict[tuple, list[tuple[str, pathlib.Path]]] = {}
    for root in roots:
        for path in sorted(pathlib.Path(root).glob("**/validation.json")):
            run = path.parent
            if any(part.startswith(".") for part in run.relative_to(root).parts):
                continue  # e.g. equal_time's .pilot runs
            if not (run / "config.json").exists():
                continue
            config = json.loads((run / "config.json").read_text())
            if config["dataset"] == "sinusoid":
                continue
            key = (
                config.get("split_protocol") == "alphabet",
                int(config["n_way"]),
                int(config["k_shot"]),
            )
            label = str(run.relative_to(root)).removesuffix("_seed0")
            panels.setdefault(key, []).append((label, run))
    titled = {}
    for (alphabet, n_way, k_shot), runs in sorted(panels.items()):
        where = "within one held-out alphabet" if alphabet else "held-out characters"
        titled[f"{n_way}-way {k_shot}-shot, {where}"] = runs
    return titled


def accuracy_curves(roots: list[str], out: pathlib.Path) -> str:
    """Draws ``accuracy_curves.png``, a panel per task setting, from every run
    below ``roots``; returns its path."""
    plt = pyplot()
    panels = curve_panels(roots)
    if not panels:
        raise app.UsageError(
            f"--curves={','.join(roots)}: no classification run folder with a "
            "validation.json below it"
        )
    # One panel a row, its legend to its right: a setting may have dozens of runs.
    figure, axes = plt.subplots(
        len(panels), 1, figsize=(9.0, 4.6 * len(panels)), squeeze=False
    )
    for axis, (title, runs) in zip(axes.flat, panels.items()):
        # The seeds of one row share a colour and a legend entry.
        row_of = {label: re.sub(r"_seed\d+$", "", label) for label, _ in runs}
        seeds = collections.Counter(row_of[label] for label, _ in runs)
        rows = list(seeds)  # in order of first appearance
        colors = plt.get_cmap("tab20" if len(rows) > 10 else "tab10").colors
        drawn = set()
        for label, run in runs:
            history = json.loads((run / "validation.json").read_text())
            points = [
                (e["step"], e["mean"]) for e in history if e.get("mean") is not None
            ]
            if not points:
                continue
            row = row_of[label]
            legend = f"{row} ({seeds[row]} seeds)" if seeds[row] > 1 else row
            steps, values = zip(*sorted(points))
            line = axis.plot(
                steps,
                [100 * v for v in values],
                marker="o",
                markersize=3,
                color=colors[rows.index(row) % len(colors)],
                linewidth=0.8 if row in drawn else 1.5,
                label=None if row in drawn else legend,
            )[0]
            drawn.add(row)
            results = run / "results.json"
            if results.exists():
                result = json.loads(results.read_text())
                served = result["evaluations"][0]
                axis.errorbar(
                    result["checkpoint_step"],
                    100 * served["mean"],
                    yerr=100 * served["ci95"],
                    color=line.get_color(),
                    marker="*",
                    markersize=10,
                    capsize=3,
                )
        axis.set_xscale("symlog", linthresh=100)
        axis.set_xlabel("meta-steps")
        axis.set_ylabel("accuracy (%)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(
        "meta-validation accuracy (lines) and meta-test accuracy, served (stars, 95% CI)"
    )
    figure.tight_layout(rect=(0, 0, 1, 0.985))  # room for the title
    target = out / "accuracy_curves.png"
    figure.savefig(target, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return str(target)


def main(argv):
    del argv
    if not FLAGS.sinusoid_workdir and not FLAGS.curves:
        raise app.UsageError("give --sinusoid_workdir and/or --curves")
    try:
        steps = [int(s) for s in FLAGS.steps]
    except ValueError as error:
        raise app.UsageError(f"--steps must be integers, got {FLAGS.steps}") from error
    if any(s < 1 for s in steps) or not 1 <= len(steps) <= 3:
        raise app.UsageError(f"--steps must be 1 to 3 counts >= 1, got {FLAGS.steps}")
    if FLAGS.tasks < 1:
        raise app.UsageError(f"--tasks must be >= 1, got {FLAGS.tasks}")
    out = pathlib.Path(FLAGS.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pyplot()  # before any run is read
    if FLAGS.sinusoid_workdir:
        print(sinusoid_fits(FLAGS.sinusoid_workdir, out, FLAGS.tasks, steps))
    if FLAGS.curves:
        print(accuracy_curves(FLAGS.curves, out))


if __name__ == "__main__":
    app.run(main)
