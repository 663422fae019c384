"""What an export needs of a learner: any object with these attributes
(``tfmeta.core.Learner`` has them), so the export layer imports no learner."""

from __future__ import annotations

from typing import Any, Protocol

import keras
import tensorflow as tf


class Servable(Protocol):
    name: str
    model: keras.Model
    saved_variables: list  # the learner's own meta-parameters and state

    def serving_functions(self, preprocessing=None) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]: ...


def tracked(variables) -> list[tf.Variable]:
    """``tf.Variable``s to save for ``variables`` (Keras 3 variables are
    tracked through their ``tf.Variable`` values)."""
    return [v.value if isinstance(v, keras.Variable) else v for v in variables]
