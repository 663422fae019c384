"""experiments.results.summarize: the results tables from run records."""

import json
import statistics

import pytest

from experiments.results import summarize


def _record(folder, seed, mean, ci95, algorithm="maml", steps=100, inner_steps=(3,)):
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
    evaluations = [
        {
            "metric": "accuracy",
            "mean": mean - 0.01 * index,
            "ci95": ci95,
            "inner_steps": count,
            "num_tasks": 600,
        }
        for index, count in enumerate(inner_steps)
    ]
    result = {
        "evaluations": evaluations,
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
        "| 3 | 3 |" in pretrained
        and "95.00+-0.40, 96.00+-0.40, 97.00+-0.40" in pretrained
    )
    # One seed: that run's own interval over its test tasks, never "nan".
    single = next(line for line in lines if line.startswith("| maml |"))
    assert "90.00% +- 0.63% over tasks" in single and "nan" not in single


def test_runs_tested_after_different_inner_steps_are_not_averaged(tmp_path):
    """Seed 0 reported 3 then 1 test step, seeds 1 and 2 1 then 10: a row per
    count, each over the seeds that reported it."""
    _record(tmp_path / "maml_seed0", 0, 0.93, 0.016, inner_steps=(3, 1))
    _record(tmp_path / "maml_seed1", 1, 0.99, 0.002, inner_steps=(1, 10))
    _record(tmp_path / "maml_seed2", 2, 0.98, 0.002, inner_steps=(1, 10))
    lines = summarize.by_seed(tmp_path)[2:]
    by_count = {line.split(" | ")[5]: line for line in lines}
    assert sorted(by_count) == ["1", "10", "3"]
    assert "| 1 | 93.00% +- 1.60% over tasks |" in by_count["3"]
    assert (
        "| 3 | " in by_count["1"]
        and "92.00+-1.60, 99.00+-0.20, 98.00+-0.20" in by_count["1"]
    )
    assert "| 2 | " in by_count["10"]


@pytest.mark.parametrize(
    "name, row", [("maml_seed12", "maml"), ("reptile+pretrained", "reptile+pretrained")]
)
def test_row_name_drops_only_the_seed(tmp_path, name, row):
    assert summarize.row_name(tmp_path / name) == row
