"""MetaLearnerModel: Keras fit is the Trainer's meta-step, callbacks save and
restore the learner's variables and optimizer, evaluate is the learner's
meta-test figure."""

from __future__ import annotations

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training import runs
from tfmeta.algorithms import MAMLPlusPlus
from tfmeta.data import sinusoid_dataset
from tfmeta.models import conv4
from tfmeta.training import MetaLearnerModel, Trainer, evaluate

STEPS_PER_EPOCH = 2


def values(learner) -> list[np.ndarray]:
    """theta, the learner's state and the outer optimizer's variables (its
    step count and moments)."""
    variables = list(learner.model.variables) + list(learner.saved_variables)
    variables += list(learner.outer_optimizer.variables)
    return [np.array(v.numpy()) for v in variables]


def assert_same(first, second) -> None:
    """Bit for bit, every variable."""
    assert len(first) == len(second) > 0
    for index, (a, b) in enumerate(zip(first, second)):
        assert a.dtype == b.dtype, index
        np.testing.assert_array_equal(a, b, err_msg=f"variable {index}")


def compiled(learner) -> MetaLearnerModel:
    model = MetaLearnerModel(learner)
    model.compile()
    return model


def test_fit_gives_the_trainers_parameters(tmp_path):
    trainer = Trainer(
        runs.make_learner(),
        str(tmp_path / "run"),
        runs.train_episodes,
        print_fn=lambda line: None,
        checkpoint_every=runs.NUM_STEPS,
    )
    trainer.train(runs.NUM_STEPS)
    learner = runs.make_learner()
    model = compiled(learner)
    history = model.fit(
        runs.train_episodes(0),
        epochs=runs.NUM_STEPS // 4,
        steps_per_epoch=4,
        verbose=0,
    )
    assert sorted(history.history) == ["loss", "meta_gradient_norm", "mse"]
    # One outer update per episode: Keras applies no gradient of its own.
    assert int(learner.outer_optimizer.iterations) == runs.NUM_STEPS
    # Tolerance 0, stricter than float32 round-off: fit runs Keras' step
    # eagerly around the very compiled meta-step the Trainer calls, on the
    # same episodes and task seeds (from the optimizer's step), so theta and
    # Adam's moments and step agree bit for bit.
    assert_same(values(trainer.learner), values(learner))


def test_compile_uses_the_learners_optimizer_and_refuses_others():
    learner = runs.make_learner()
    model = MetaLearnerModel(learner)
    with pytest.raises(ValueError, match="outer_optimizer"):
        model.compile(optimizer=keras.optimizers.Adam(0.1))
    with pytest.raises(ValueError, match="jit_compile=True"):
        model.compile(jit_compile=True)
    model.compile()
    assert model.optimizer is learner.outer_optimizer
    model.compile(optimizer=learner.outer_optimizer)
    assert model.optimizer is learner.outer_optimizer
    with pytest.raises(ValueError, match="tfmeta learner"):
        MetaLearnerModel(learner.model)
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        distributed = runs.make_learner()
    with pytest.raises(ValueError, match="tf.distribute strategy"):
        MetaLearnerModel(distributed)
    # The model's variables are the learner's: theta and its state.
    assert [id(v) for v in model.trainable_weights] == [
        id(v) for v in learner.variables
    ]


def test_evaluate_is_the_learners_meta_test(tmp_path):
    learner = runs.make_learner()
    model = compiled(learner)
    model.fit(runs.train_episodes(0), epochs=1, steps_per_epoch=3, verbose=0)
    logs = model.evaluate(runs.meta_test_episodes(), return_dict=True, verbose=0)
    result = evaluate(learner, runs.meta_test_episodes())
    assert sorted(logs) == ["loss", "mse"]
    # Keras' Mean sums in float32, evaluate in float64: float32 round-off.
    np.testing.assert_allclose(logs["mse"], result["mean"], rtol=1e-6)
    np.testing.assert_allclose(logs["loss"], result["loss"], rtol=1e-6)


class Interrupt(Exception):
    """Raised by a callback to stop fit as a crash would."""


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.epoch, self.batch, self.current = epoch, batch, None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            raise Interrupt(f"epoch {self.epoch} batch {batch}")


STREAMS = {
    # Keras iterates a finite dataset again from its start at each epoch.
    "finite dataset": (
        lambda: sinusoid_dataset(5, 5, 4, seed=1, num_episodes=STEPS_PER_EPOCH),
        {},
    ),
    # The Trainer's train_episodes(start_step): an infinite counter-based
    # stream that fit starts at the restored step.
    "stream from the step": (
        lambda: runs.train_episodes,
        {"steps_per_epoch": STEPS_PER_EPOCH},
    ),
}


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_backup_and_restore_resumes_an_interrupted_fit(tmp_path, stream):
    episodes, settings = STREAMS[stream]
    epochs = 3
    whole = runs.make_learner()
    compiled(whole).fit(episodes(), epochs=epochs, verbose=0, **settings)

    backup = str(tmp_path / "backup")
    first = compiled(runs.make_learner())
    with pytest.raises(Interrupt):
        first.fit(
            episodes(),
            epochs=epochs,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup),
                InterruptAt(epoch=1, batch=1),
            ],
            **settings,
        )
    assert int(first.optimizer.iterations) == STEPS_PER_EPOCH + 2
    # Another initialization, as a new process would build: everything
    # comes from the backup of epoch 0 (theta, Adam's moments and step).
    learner = runs.make_learner(seed=9)
    history = compiled(learner).fit(
        episodes(),
        epochs=epochs,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup)],
        **settings,
    )
    assert history.epoch == [1, 2]
    assert int(learner.outer_optimizer.iterations) == epochs * STEPS_PER_EPOCH
    assert_same(values(whole), values(learner))
    assert not os.path.exists(backup)  # deleted at the end of a finished fit


def scalar_tags(folder: str) -> set[str]:
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_checkpoint_early_stopping_and_tensorboard_on_meta_validation(tmp_path):
    learner = runs.make_learner()
    model = compiled(learner)
    best_path = str(tmp_path / "best.weights.h5")
    logs = str(tmp_path / "logs")
    snapshots = []
    history = model.fit(
        runs.train_episodes(0),
        epochs=4,
        steps_per_epoch=STEPS_PER_EPOCH,
        validation_data=runs.val_episodes(),
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: snapshots.append(values(learner))
            ),
            keras.callbacks.ModelCheckpoint(
                best_path,
                monitor="val_loss",
                save_best_only=True,
                save_weights_only=True,
            ),
            keras.callbacks.EarlyStopping(monitor="val_mse", mode="min", patience=1),
            keras.callbacks.TensorBoard(logs),
        ],
    )
    val = history.history["val_mse"]
    # Adam at 0.1 (runs.py): the meta-validation MSE of step 4 is worse than
    # that of step 2, so patience 1 stops after the second epoch.
    assert val[1] > val[0]
    assert history.epoch == [0, 1]
    assert sorted(history.history) == [
        "loss",
        "meta_gradient_norm",
        "mse",
        "val_loss",
        "val_mse",
    ]
    # The checkpoint holds the best epoch's theta and optimizer state.
    best = int(np.argmin(history.history["val_loss"]))
    restored = runs.make_learner(seed=9)
    compiled(restored).load_weights(best_path)
    assert_same(snapshots[best], values(restored))
    assert {"epoch_loss", "epoch_mse"} <= scalar_tags(os.path.join(logs, "train"))
    assert {"epoch_loss", "epoch_mse"} <= scalar_tags(os.path.join(logs, "validation"))


def random_episodes(seed: int, count: int, n_way=3, k_shot=2, q_query=2, tasks=2):
    """Seeded random images ``[tasks, N*K, 8, 8, 1]``, class-shifted so that
    a prototype is informative, with labels ``[tasks, N*K]``."""
    rng = np.random.default_rng(seed)

    def split(shots):
        labels = np.tile(np.repeat(np.arange(n_way), shots), (count, tasks, 1))
        images = (
            rng.normal(size=(*labels.shape, 8, 8, 1)) + labels[..., None, None, None]
        )
        return images.astype("float32"), labels.astype("int32")

    support_x, support_y = split(k_shot)
    query_x, query_y = split(q_query)
    return tf.data.Dataset.from_tensor_slices((support_x, support_y, query_x, query_y))


def image_learner(seed: int) -> MAMLPlusPlus:
    """MAML++ on a tiny conv4 with every variable kind: theta, its own
    meta-parameters (per-step step sizes and batch norm) and its state
    (running statistics)."""
    network = conv4(3, input_shape=(8, 8, 1), filters=8, depth=2, seed=seed)
    return MAMLPlusPlus(
        network,
        keras.optimizers.Adam(0.01),
        inner_lr=0.1,
        inner_steps=1,
        running_statistics=True,
        adapt_variables="all_but_norm",
    )


def test_an_image_learner_fits_and_its_checkpoint_restores_every_variable(tmp_path):
    learner = image_learner(seed=1)
    assert learner.own_variables and learner.state_variables
    before = values(learner)
    best_path = str(tmp_path / "best.weights.h5")
    snapshots = []
    history = compiled(learner).fit(
        random_episodes(0, 3),
        epochs=3,
        validation_data=random_episodes(1, 2),
        verbose=0,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: snapshots.append(values(learner))
            ),
            keras.callbacks.ModelCheckpoint(
                best_path,
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            ),
        ],
    )
    assert sorted(history.history) == [
        "accuracy",
        "loss",
        "meta_gradient_norm",
        "val_accuracy",
        "val_loss",
    ]
    assert int(learner.outer_optimizer.iterations) == 9
    after = values(learner)
    assert len(before) == len(after)
    # theta, the step sizes and the running statistics all moved.
    moved = [not np.array_equal(a, b) for a, b in zip(before, after)]
    first_own = len(learner.model.variables)
    assert (
        moved[0] and moved[first_own] and moved[first_own + len(learner.own_variables)]
    )
    np.testing.assert_allclose(
        history.history["val_accuracy"][-1],
        evaluate(learner, random_episodes(1, 2))["mean"],
        rtol=1e-6,
    )
    # The first epoch of the highest val_accuracy (ties keep the first).
    best = int(np.argmax(history.history["val_accuracy"]))
    restored = image_learner(seed=2)
    compiled(restored).load_weights(best_path)
    assert_same(snapshots[best], values(restored))
