"""One suite every algorithm of the registry passes: a training run through
the binaries' builders, and resume equal to the uninterrupted run (theta,
the learner's own meta-parameters and state, and the outer optimizer).

The algorithms come from the registry, each on the first dataset its
configs support (``tests.export.dataset_of``): a new algorithm is in this
suite with no edit. Its export and served answers are checked for every
algorithm by ``tests/test_user_path.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.export import restore_learner
from tests.export import (
    dataset_of,
    fake_embeddings,
    fake_omniglot,
    tiny_config,
    train_workdir,
)
from tfmeta.algorithms import ALGORITHMS


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance")
    return {
        "omniglot": str(fake_omniglot(root / "omniglot")),
        "embeddings": str(fake_embeddings(root / "embeddings")),
        "sinusoid": "",
    }


def config_of(name: str, data_dirs, num_steps: int) -> dict:
    dataset = dataset_of(name)
    config = tiny_config(name, dataset, data_dirs[dataset])
    # A schedule over the run is as long as the run that resumes (the binary
    # fixes it when the run starts).
    config.update(
        num_steps=num_steps, schedule_steps=3, eval_every=2, checkpoint_every=1
    )
    if (
        name == "maml_plus_plus"
    ):  # every part on: per-step parameters, LSLR, running statistics
        config.update(
            inner_steps=2,
            eval_inner_steps=3,
            multi_step_loss_steps=0.5,
            running_statistics=True,
        )
    return config


def variables_of(workdir, config) -> list[np.ndarray]:
    learner, _ = restore_learner(str(workdir), config, "latest")
    state = [v.numpy() for v in learner.variables + learner.state_variables]
    state += [v.numpy() for v in learner.outer_optimizer.variables]
    return state


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_training_resumes_to_the_uninterrupted_run(name, data_dirs, tmp_path):
    """2 steps, then on to 3, equals 3 steps in one go, bit for bit."""
    once = train_workdir(tmp_path / "once", config_of(name, data_dirs, 3))
    twice = tmp_path / "twice"
    train_workdir(twice, config_of(name, data_dirs, 2))
    train_workdir(twice, config_of(name, data_dirs, 3))
    config = config_of(name, data_dirs, 3)
    uninterrupted, resumed = variables_of(once, config), variables_of(twice, config)
    assert len(uninterrupted) == len(resumed) > 0
    for a, b in zip(uninterrupted, resumed):
        np.testing.assert_array_equal(a, b)
