"""Prints a markdown table of every ``results.json`` below a folder.

python -m experiments.results.summarize /tmp/tfmeta_results
python -m experiments.results.summarize --by_seed /tmp/tfmeta_ablation [served|transductive]

Each run gives a row per test inner-step count and normalization mode: the
served one (as an export answers), and the transductive one beside it where
the run's meta-test reported it. ``--by_seed`` groups runs that differ only
in their seed, in the mode named (default: served).
"""

from __future__ import annotations

import collections
import json
import pathlib
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


def by_seed(root: pathlib.Path, mode: str = "served") -> None:
    groups = collections.defaultdict(list)
    for path in sorted(root.glob("*/results.json")):
        result = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        key = (
            config["algorithm"],
            config["task_weighting"],
            config["noisy_task_fraction"],
            config["num_steps"],
        )
        groups[key].append(
            (
                config["seed"],
                (
                    result.get("transductive_evaluations") or result["evaluations"]
                    if mode == "transductive"
                    else result["evaluations"]
                )[0],
                (result.get("train_seconds") or 0) / 60,
            )
        )
    print(
        "| algorithm | weighting | noisy tasks | steps | seeds | accuracy over seeds (95% t-CI) | per seed | train min (mean) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (algorithm, weighting, noise, steps), runs in sorted(groups.items()):
        accuracies = [100 * e["mean"] for _, e, _ in runs]
        mean = statistics.mean(accuracies)
        half = (
            T_95.get(len(runs) - 1, 1.96)
            * statistics.stdev(accuracies)
            / len(runs) ** 0.5
            if len(runs) > 1
            else float("nan")
        )
        seeds = ", ".join(
            f"{100 * e['mean']:.2f}+-{100 * e['ci95']:.2f}"
            for _, e, _ in sorted(runs, key=lambda r: r[0])
        )
        minutes = statistics.mean(m for _, _, m in runs)
        print(
            f"| {algorithm} | {weighting} | {noise:.0%} | {steps} | {len(runs)} | {mean:.2f}% +- {half:.2f}% | {seeds} | {minutes:.1f} |"
        )


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "--by_seed":
        by_seed(
            pathlib.Path(argv[2] if len(argv) > 2 else "/tmp/tfmeta_ablation"),
            argv[3] if len(argv) > 3 else "served",
        )
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
