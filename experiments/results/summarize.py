"""Prints a markdown table of every ``results.json`` below a folder.

python -m experiments.results.summarize /tmp/tfmeta_results
python -m experiments.results.summarize --by_seed /tmp/tfmeta_ablation [served|transductive]

Each run gives a row per test inner-step count and normalization mode: the
served one (as an export answers), and the transductive one beside it where
the run's meta-test reported it. ``--by_seed`` groups runs that differ only
in their seed, in the mode named (default: served), one row per test
inner-step count (runs that reported different counts are never averaged
together).
"""

from __future__ import annotations

import collections
import json
import pathlib
import re
import statistics
import sys

# two-sided 95% Student t quantiles by degrees of freedom
T_95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
}


def rows(root: pathlib.Path):
    for path in sorted(root.glob("*/results.json")):
        result = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        modes = [("served", e) for e in result["evaluations"]]
        modes += [
            ("transductive", e) for e in result.get("transductive_evaluations") or []
        ]
        for mode, evaluation in modes:
            scale = 100 if evaluation["metric"] == "accuracy" else 1
            unit = "%" if scale == 100 else ""
            minutes = (result.get("train_seconds") or 0) / 60
            yield (
                f"| {path.parent.name} | {config['algorithm']} | {config['n_way'] if config['dataset'] != 'sinusoid' else '-'}"
                f" | {config['k_shot']} | {result.get('trained_steps')} | {minutes:.1f} | {evaluation['inner_steps']} | {mode}"
                f" | {evaluation['metric']} {scale * evaluation['mean']:.2f}{unit} +- {scale * evaluation['ci95']:.2f}{unit}"
                f" ({evaluation['num_tasks']} tasks) | best step {result['checkpoint_step']} |"
            )


def row_name(run: pathlib.Path) -> str:
    """A run folder's row: its name without ``_seed<N>`` (``maml+pretrained_seed1``
    -> ``maml+pretrained``)."""
    return re.sub(r"_seed[0-9]+$", "", run.name)


def by_seed(root: pathlib.Path, mode: str = "served") -> list[str]:
    """The markdown lines of one row per run folder name without its seed and
    test inner-step count: the mean over seeds with its 95% t-interval, or,
    for one seed, that run's own interval over its test tasks."""
    groups = collections.defaultdict(list)
    for path in sorted(root.glob("*/results.json")):
        result = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        evaluations = (
            result.get("transductive_evaluations") or result["evaluations"]
            if mode == "transductive"
            else result["evaluations"]
        )
        for evaluation in evaluations:
            key = (
                row_name(path.parent),
                config["algorithm"],
                config["task_weighting"],
                config["noisy_task_fraction"],
                result.get("trained_steps", config["num_steps"]),
                evaluation["inner_steps"],
            )
            groups[key].append(
                (
                    config["seed"],
                    evaluation,
                    (result.get("train_seconds") or 0) / 60,
                )
            )
    lines = [
        "| row | algorithm | weighting | noisy tasks | steps | test steps | seeds | accuracy (95% CI) | per seed | train min (mean) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, runs in sorted(groups.items()):
        row, algorithm, weighting, noise, steps, test_steps = key
        accuracies = [100 * e["mean"] for _, e, _ in runs]
        mean = statistics.mean(accuracies)
        if len(runs) > 1:
            spread = T_95.get(len(runs) - 1, 1.96) * statistics.stdev(accuracies)
            half = f"{spread / len(runs) ** 0.5:.2f}% over seeds"
        else:
            half = f"{100 * runs[0][1]['ci95']:.2f}% over tasks"
        seeds = ", ".join(
            f"{100 * e['mean']:.2f}+-{100 * e['ci95']:.2f}"
            for _, e, _ in sorted(runs, key=lambda r: r[0])
        )
        minutes = statistics.mean(m for _, _, m in runs)
        lines.append(
            f"| {row} | {algorithm} | {weighting} | {noise:.0%} | {steps} "
            f"| {test_steps} | {len(runs)} "
            f"| {mean:.2f}% +- {half} | {seeds} | {minutes:.1f} |"
        )
    return lines


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "--by_seed":
        lines = by_seed(
            pathlib.Path(argv[2] if len(argv) > 2 else "/tmp/tfmeta_ablation"),
            argv[3] if len(argv) > 3 else "served",
        )
        print("\n".join(lines))
        return
    root = pathlib.Path(argv[1] if len(argv) > 1 else "/tmp/tfmeta_results")
    print(
        "| run | algorithm | N | K | steps | train min | test inner steps | mode | result (95% CI) | checkpoint |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows(root):
        print(row)


if __name__ == "__main__":
    main(sys.argv)
