"""experiments.results.summarize: the results tables from run records."""

import json
import statistics

import pytest

from experiments.results import summarize


def _record(folder, seed, mean, ci95, algorithm="maml", steps=100):
    folder.mkdir(parents=True)
    config = {
        "algorithm": algorithm,
        "task_weighting": "uniform",
        "noisy_task_fraction": 0.0,
        "num_steps": steps,
        "seed": seed,
        "n_way": 5,
        "k_shot": 1,
        "dataset": "omniglot",
    }
    evaluation = {
        "metric": "accuracy",
        "mean": mean,
        "ci95": ci95,
        "inner_steps": 3,
        "num_tasks": 600,
    }
    result = {
        "evaluations": [evaluation],
        "trained_steps": steps,
        "train_seconds": 120.0,
        "checkpoint_step": steps,
    }
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "results.json").write_text(json.dumps(result))


def test_rows_are_run_names_over_seeds_with_their_interval(tmp_path):
    means = [0.95, 0.96, 0.97]
    for seed, mean in enumerate(means):
        _record(tmp_path / f"maml+pretrained_seed{seed}", seed, mean, 0.004)
    _record(tmp_path / "maml_seed0", 0, 0.9, 0.0063)
    lines = summarize.by_seed(tmp_path)
    assert len(lines) == 4
    pretrained = next(line for line in lines if line.startswith("| maml+pretrained |"))
    half = 4.303 * statistics.stdev([95.0, 96.0, 97.0]) / 3**0.5  # t(2) = 4.303
    assert f"96.00% +- {half:.2f}% over seeds" in pretrained
    assert (
        "| 3 |" in pretrained and "95.00+-0.40, 96.00+-0.40, 97.00+-0.40" in pretrained
    )
    # One seed: that run's own interval over its test tasks, never "nan".
    single = next(line for line in lines if line.startswith("| maml |"))
    assert "90.00% +- 0.63% over tasks" in single and "nan" not in single


@pytest.mark.parametrize(
    "name, row", [("maml_seed12", "maml"), ("reptile+pretrained", "reptile+pretrained")]
)
def test_row_name_drops_only_the_seed(tmp_path, name, row):
    assert summarize.row_name(tmp_path / name) == row
