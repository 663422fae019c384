"""Prints a markdown table of every ``results.json`` below a folder.

python -m experiments.results.summarize /tmp/tfmeta_results
"""

from __future__ import annotations

import json
import pathlib
import sys


def rows(root: pathlib.Path):
    for path in sorted(root.glob("*/results.json")):
        result = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        for evaluation in result["evaluations"]:
            scale = 100 if evaluation["metric"] == "accuracy" else 1
            unit = "%" if scale == 100 else ""
            minutes = (result.get("train_seconds") or 0) / 60
            yield (
                f"| {path.parent.name} | {config['algorithm']} | {config['n_way'] if config['dataset'] != 'sinusoid' else '-'}"
                f" | {config['k_shot']} | {result.get('trained_steps')} | {minutes:.1f} | {evaluation['inner_steps']}"
                f" | {evaluation['metric']} {scale * evaluation['mean']:.2f}{unit} +- {scale * evaluation['ci95']:.2f}{unit}"
                f" ({evaluation['num_tasks']} tasks) | best step {result['checkpoint_step']} |"
            )


def main(argv: list[str]) -> None:
    root = pathlib.Path(argv[1] if len(argv) > 1 else "/tmp/tfmeta_results")
    print(
        "| run | algorithm | N | K | steps | train min | test inner steps | result (95% CI) | checkpoint |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows(root):
        print(row)


if __name__ == "__main__":
    main(sys.argv)
