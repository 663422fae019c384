"""A meta-learner as a ``keras.Model``: ``compile``, ``fit``, ``evaluate``, callbacks.

``fit`` calls ``train_step`` once per element of the training stream; here
``train_step`` is the learner's own meta-step (``learner.meta_train_step``:
adapt to every task of the meta-batch, one outer update of theta with the
learner's outer optimizer, beta its rate) and ``test_step`` its
meta-evaluation (``learner.meta_eval_step``). Keras applies no gradient of
its own. The Keras step runs eagerly around the learner's compiled steps
(``tf.function``, XLA when the learner was built with ``jit_compile=True``),
so the same episodes give the same theta as the binaries' ``Trainer``.

The model's variables are the learner's: theta (the network's variables and
the meta-parameters the learner owns, e.g. Meta-SGD's alpha) and its state
(e.g. MAML++'s running statistics); ``model.optimizer`` is the learner's
outer optimizer. ``save_weights`` / ``load_weights``,
``ModelCheckpoint(save_weights_only=True)`` and ``BackupAndRestore`` save
and restore all of them with the optimizer's state and step.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfmeta.core.learner import Learner


class MetaLearnerModel(keras.Model):
    """A tfmeta learner trained with Keras' ``fit`` / ``evaluate``.

    An element of the training and validation streams is an episode, what
    ``learner.meta_train_step`` takes: (support_x ``[B, N*K, ...]``,
    support_y ``[B, N*K]``, query_x ``[B, N*Q, ...]``, query_y ``[B, N*Q]``),
    as ``tfmeta.data.episode_dataset`` and ``sinusoid_dataset`` yield.

    Logs: "loss" (the query loss after adaptation, mean over the epoch's
    meta-steps), the learner's metric ("accuracy" or "mse") and
    "meta_gradient_norm"; with ``validation_data``, "val_loss" and
    "val_accuracy" (or "val_mse"), means over every validation task.

    Example::

        model = MetaLearnerModel(learner)
        model.compile()
        model.fit(train_episodes, epochs=10, steps_per_epoch=100,
                  validation_data=val_episodes,
                  callbacks=[keras.callbacks.EarlyStopping("val_accuracy", mode="max")])
        model.evaluate(test_episodes, return_dict=True)

    Args:
      learner: a ``tfmeta.core.Learner`` (MAML, Prototypical Networks, ...),
        built outside a ``tf.distribute`` strategy of several replicas (the
        binaries' ``Trainer`` splits a meta-batch over replicas).
      name: the Keras model's name (default: "<learner name>_model").
    """

    def __init__(self, learner: Learner, name: str | None = None):
        if not isinstance(learner, Learner):
            raise ValueError(  # noqa: TRY004 (a bad argument's value, as elsewhere)
                "MetaLearnerModel wraps a tfmeta learner (a tfmeta.core.Learner such "
                f"as tfmeta.MAML), got {type(learner).__name__}"
            )
        if learner.distributed:
            raise ValueError(
                f"{learner.name} was built under a tf.distribute strategy: Keras fit "
                "would split its meta-batch a second time; train it with "
                "tfmeta.training.Trainer, or build it outside the strategy"
            )
        super().__init__(name=name or f"{learner.name}_model")
        self.learner = learner
        self.network = learner.model  # tracked: its variables and saving path
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.metric_tracker = keras.metrics.Mean(name=learner.metric_name)
        self.norm_tracker = keras.metrics.Mean(name="meta_gradient_norm")
        self.built = True

    # ------------------------------------------------------------- compile
    def compile(
        self,
        optimizer: Any = None,
        *,
        jit_compile: bool | str = False,
        steps_per_execution: int = 1,
    ) -> None:
        """Makes the learner's outer optimizer ``model.optimizer``.

        Args:
          optimizer: None or the learner's own ``outer_optimizer`` (the
            meta-step applies only that one).
          jit_compile: False or "auto" (off). For XLA build the learner with
            ``jit_compile=True``: its meta-steps are then compiled with XLA.
          steps_per_execution: meta-steps per call of Keras' train function.

        Raises:
          ValueError: another optimizer, or ``jit_compile=True``.
        """
        learner = self.learner
        if optimizer is not None and optimizer is not learner.outer_optimizer:
            raise ValueError(
                f"compile() takes no optimizer or the learner's own outer_optimizer "
                f"(the meta-step applies only that one), got {optimizer!r}: build "
                "the learner with the outer optimizer you want"
            )
        if jit_compile is True:
            raise ValueError(
                "jit_compile=True: Keras would compile the learner's meta-step into "
                "its own XLA function; build the learner with jit_compile=True "
                "instead (its meta-steps are then compiled with XLA)"
            )
        super().compile(
            optimizer=learner.outer_optimizer,
            loss=None,
            metrics=None,
            # The Keras step only calls the learner's compiled tf.functions,
            # exactly as the Trainer does: no second trace, no second graph.
            run_eagerly=True,
            jit_compile=False,
            steps_per_execution=steps_per_execution,
            auto_scale_loss=False,
        )

    def fit(self, x=None, y=None, **kwargs) -> keras.callbacks.History:
        """Keras' ``fit`` over episodes (keyword arguments as Keras').

        Args:
          x: a ``tf.data.Dataset`` of episodes, or, as the ``Trainer``'s
            ``train_episodes``, a function ``start_step -> dataset`` called
            with the outer optimizer's step after a ``BackupAndRestore`` in
            ``callbacks`` has restored its backup: a counter-based stream
            (``tfmeta.data``'s ``start_episode``) then continues where the
            interrupted fit stopped, so the resumed fit equals one that never
            stopped. A finite dataset is iterated again from its start each
            epoch.
          y: must be None (an episode holds its labels).
          **kwargs: as ``keras.Model.fit``; ``shuffle`` defaults to False
            (the stream's order is the learner's task order).
        """
        if y is not None:
            raise ValueError(
                "fit takes episodes (support_x, support_y, query_x, query_y) as x "
                "and no y"
            )
        kwargs.setdefault("shuffle", False)
        if callable(x) and not isinstance(x, tf.data.Dataset):
            for callback in kwargs.get("callbacks") or ():
                if isinstance(callback, keras.callbacks.BackupAndRestore):
                    # Restores theta and the step now; Keras' own call at
                    # the start of training reads the same backup again.
                    callback.set_model(self)
                    callback.on_train_begin()
            x = x(int(self.learner.outer_optimizer.iterations.numpy()))
        return super().fit(x, **kwargs)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The epoch's means, reset by Keras at each epoch and evaluation."""
        return [self.loss_tracker, self.metric_tracker, self.norm_tracker]

    # --------------------------------------------------------------- steps
    def train_step(self, data) -> dict[str, tf.Tensor]:
        """One meta-step (``learner.meta_train_step``): one outer update."""
        outputs = self.learner.meta_train_step(tuple(data))
        self.loss_tracker.update_state(outputs["loss"])
        self.metric_tracker.update_state(outputs[self.learner.metric_name])
        self.norm_tracker.update_state(outputs["meta_gradient_norm"])
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, data) -> dict[str, tf.Tensor]:
        """Meta-evaluation of a batch of tasks (``learner.meta_eval_step``,
        ``eval_inner_steps``); every task counts once in the means."""
        outputs = self.learner.meta_eval_step(tuple(data))
        self.loss_tracker.update_state(outputs["loss"])
        self.metric_tracker.update_state(outputs[self.learner.metric_name])
        return {
            metric.name: metric.result()
            for metric in (self.loss_tracker, self.metric_tracker)
        }

    def predict_step(self, data) -> tf.Tensor:
        """Query outputs ``[B, N*Q, ...]`` after adapting to each support set."""
        return self.learner.meta_eval_step(tuple(data))["outputs"]

    def call(self, inputs, training=None):
        """Not used: a meta-learner adapts to a task before it predicts."""
        raise NotImplementedError(
            "MetaLearnerModel is trained with fit/evaluate; for query outputs use "
            "predict on episodes, or learner.adapt and learner.predict"
        )

    # ----------------------------------------------------------- variables
    @property
    def variables(self) -> list:
        """theta and the learner's state: the network's variables, then the
        learner's own meta-parameters and state (as a Trainer checkpoint)."""
        return list(self.learner.model.variables) + list(self.learner.saved_variables)

    @property
    def weights(self) -> list:
        return self.variables

    @property
    def trainable_weights(self) -> list:
        return [v for v in self.variables if v.trainable]

    @property
    def non_trainable_weights(self) -> list:
        return [v for v in self.variables if not v.trainable]

    def save_own_variables(self, store) -> None:
        """The learner's own meta-parameters and state (the network and the
        optimizer are saved as the model's children)."""
        for index, variable in enumerate(self.learner.saved_variables):
            store[str(index)] = variable.numpy()

    def load_own_variables(self, store) -> None:
        saved = self.learner.saved_variables
        if len(store.keys()) != len(saved):
            raise ValueError(
                f"the weights file holds {len(store.keys())} learner variables, "
                f"{self.learner.name} has {len(saved)}"
            )
        for index, variable in enumerate(saved):
            variable.assign(store[str(index)])
