"""Meta-parameters a learner owns besides the model's are checkpointed and
restored with theta."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tests.helpers import tiny_mlp
from tfmeta.algorithms import MAML
from tfmeta.training import Trainer


class WithOwnVariable(MAML):
    """MAML holding one more meta-parameter (unused by its update)."""

    name = "with_own_variable"

    def __init__(self, model, optimizer, **kwargs):
        self.extra = tf.Variable([0.25, -1.5], name="extra")
        super().__init__(model, optimizer, own_variables=[self.extra], **kwargs)


def _episodes(start_step=0):
    rng = np.random.default_rng(start_step)
    while True:
        x = rng.uniform(-1, 1, size=(2, 6, 1)).astype(np.float32)
        yield (x[:, :3], np.sin(x[:, :3]), x[:, 3:], np.sin(x[:, 3:]))


def _learner():
    return WithOwnVariable(
        tiny_mlp(seed=1), keras.optimizers.SGD(0.1), inner_lr=0.1, problem="regression"
    )


def test_own_variables_are_meta_parameters_saved_and_restored(tmp_path):
    learner = _learner()
    assert learner.variables[-1] is learner.extra
    assert len(learner.variables) == len(learner.model.trainable_variables) + 1
    Trainer(learner, str(tmp_path), _episodes, checkpoint_every=2).train(2)
    learner.extra.assign([7.0, 8.0])  # saved with the checkpoint at step 2
    fresh = _learner()
    fresh.extra.assign([0.0, 0.0])
    trainer = Trainer(fresh, str(tmp_path), _episodes)
    trainer.restore()
    np.testing.assert_array_equal(fresh.extra.numpy(), [0.25, -1.5])
    for a, b in zip(fresh.model.variables, learner.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
