"""A tiny sinusoid MAML run and exact comparisons of workdirs, for the trust tests."""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import tiny_mlp
from tfmeta.algorithms import MAML
from tfmeta.data import sinusoid_dataset
from tfmeta.training import (
    Trainer,
    Workdir,
    evaluate,
    read_json,
    restore_checkpoint,
)

# Adam at 0.1 makes the meta-validation MSE go up and down (best at steps 2, 6
# and 8 of 8, not at 4), so a stale best value would pick another best/.
NUM_STEPS = 8
SETTINGS = {"checkpoint_every": 3, "eval_every": 2, "log_every": 4}
TIMING_KEYS = ("train_seconds/.ATTRIBUTES/VARIABLE_VALUE",)


def make_learner(seed: int = 0) -> MAML:
    return MAML(
        tiny_mlp(seed=seed, hidden=(16, 16)),
        keras.optimizers.Adam(0.1),
        inner_lr=0.01,
        problem="regression",
        eval_inner_steps=1,
    )


def train_episodes(start_step: int):
    return sinusoid_dataset(5, 5, 4, seed=1, start_episode=start_step)


def val_episodes():
    return sinusoid_dataset(5, 10, 5, seed=99, num_episodes=2)


def meta_test_episodes():
    return sinusoid_dataset(5, 10, 5, seed=7, num_episodes=2)


def make_trainer(workdir, seed: int = 0, events=None, lines=None) -> Trainer:
    """A fresh learner (another init for ``seed`` != 0, as a new process would
    build) on ``workdir``; printed lines go to ``lines``."""
    return Trainer(
        make_learner(seed),
        str(workdir),
        train_episodes,
        val_episodes,
        print_fn=(lines.append if lines is not None else lambda line: None),
        events=events,
        **SETTINGS,
    )


class Crash(Exception):
    """Raised by the fault-injection hook."""


def crash_at(event: str, step: int):
    def hook(name: str, at: int) -> None:
        if (name, at) == (event, step):
            raise Crash(f"{name} {at}")

    return hook


def tensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint but the timing ones."""
    reader = tf.train.load_checkpoint(path)
    return {
        key: np.asarray(reader.get_tensor(key))
        for key in reader.get_variable_to_shape_map()
        if key not in TIMING_KEYS and key != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def assert_same_checkpoint(a: str, b: str) -> None:
    first, second = tensors(a), tensors(b)
    assert sorted(first) == sorted(second), (a, b)
    for key in first:
        assert first[key].dtype == second[key].dtype, key
        assert np.array_equal(first[key], second[key]), (key, a, b)


def meta_test(workdir) -> dict:
    learner = make_learner(seed=9)
    restore_checkpoint(str(workdir), learner, "best", print_fn=lambda line: None)
    return evaluate(learner, meta_test_episodes())


def assert_same_run(a, b) -> None:
    """Bit for bit: the latest and best checkpoints, the validation history,
    the trained steps and the meta-test result (timing and paths aside)."""
    first, second = Workdir(str(a)), Workdir(str(b))
    for folder in ("latest", "best"):
        steps = getattr(first, folder).steps()
        assert steps == getattr(second, folder).steps(), folder
        for step in steps:
            assert_same_checkpoint(
                getattr(first, folder).path(step), getattr(second, folder).path(step)
            )
    history = [read_json(w.history_path) for w in (first, second)]
    assert history[0] == history[1]
    assert first.read_timing()["step"] == second.read_timing()["step"]
    assert meta_test(a) == meta_test(b)


def snapshot(root) -> dict[str, tuple[bytes, int]]:
    """Every file below ``root``: its bytes and modification time."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = (
                    f.read(),
                    os.stat(path).st_mtime_ns,
                )
    return files
