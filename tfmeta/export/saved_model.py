"""Exports a trained meta-learner as a SavedModel that adapts at serving time.

The exported ``tf.Module`` holds theta (the learner's variables) and one
``tf.function`` per signature. A request carries a support set and queries;
the graph runs the learner's own non-differentiable adaptation
(``learner.adapt``), then predicts the queries. The learner says what is
served: ``learner.serving_functions(preprocessing)`` gives the functions
(fast-weight learners share ``signatures.classification_signatures`` /
``regression_signatures``; LEO has its own) and ``learner.describe()`` what a
client needs to know. Nothing else about the learner is saved. Each function
is served behind the export's request limits (``limits.limited``), which the
metadata records.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from tfmeta import errors
from tfmeta.export import layout
from tfmeta.export.limits import ServingLimits, limited
from tfmeta.export.servable import Servable, tracked
from tfmeta.export.signatures import ImagePreprocessing
from tfmeta.version import __version__

DEFAULT_SIGNATURE = "adapt_and_predict"
"""The signature exported as ``serving_default``: adapt to the request's support set, predict its queries."""
METADATA_SIGNATURE = "metadata"
"""The signature with no inputs that returns what the export runs (``describe_learner``) and its limits."""
METADATA_FILE = os.path.join("assets.extra", "tfmeta_export.json")
"""The same metadata as JSON, relative to a version folder (readable without TensorFlow)."""


def serving_learner(learner: Servable, transductive: bool) -> Servable:
    """A shallow copy of ``learner`` (same model and variables) for the serving graph.

    ``transductive`` replaces the learner's setting (the trained learner is
    not changed): False normalizes queries with the support set's statistics,
    so a query's prediction does not depend on the other queries of its
    request.
    """
    serving = copy.copy(learner)
    if hasattr(serving, "transductive"):
        serving.transductive = transductive
    return serving


def describe_learner(
    learner: Servable,
    transductive: bool,
    image_preprocessing: ImagePreprocessing | None,
) -> dict[str, Any]:
    """What a client needs to know to call the export: the adaptation it runs."""
    return {
        **learner.describe(),
        "transductive": bool(transductive),
        "image_preprocessing": (
            image_preprocessing.describe() if image_preprocessing else "none"
        ),
        "tfmeta_version": __version__,
    }


def _constant(value: Any) -> tf.Tensor:
    if isinstance(value, bool):
        return tf.constant(value, tf.bool)
    if isinstance(value, int):
        return tf.constant(value, tf.int64)
    if isinstance(value, float):
        return tf.constant(value, tf.float32)
    if isinstance(value, str):
        return tf.constant(value, tf.string)
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return tf.constant(value, tf.int64)
    raise TypeError(
        f"metadata values must be str, int, float, bool or int lists, got {value!r}"
    )


class ServingModule(tf.Module):
    """theta and the serving functions of one learner.

    Attributes:
      variables_to_save: the model's variables (Keras 3 variables are tracked
        through their ``tf.Variable`` values).
      metadata_values: the values the ``metadata`` signature returns.
      function_names: the serving functions, also attributes of the module,
        each behind ``limits`` (default ``ServingLimits()``).
    """

    def __init__(
        self,
        learner: Servable,
        *,
        transductive: bool = False,
        image_preprocessing: ImagePreprocessing | None = None,
        metadata: Mapping[str, Any] | None = None,
        limits: ServingLimits | None = None,
    ):
        super().__init__(name="tfmeta_serving")
        self.variables_to_save = tracked(learner.model.variables) + tracked(
            learner.saved_variables
        )
        serving = serving_learner(learner, transductive)
        functions = serving.serving_functions(image_preprocessing)
        if DEFAULT_SIGNATURE not in functions:
            raise ValueError(
                f"the serving functions of {learner.name!r} must include {DEFAULT_SIGNATURE!r}, "
                f"got {sorted(functions)}"
            )
        limits = limits or ServingLimits()
        functions = {
            name: limited(name, function, limits)
            for name, function in functions.items()
        }
        values = describe_learner(learner, transductive, image_preprocessing)
        values.update(limits.metadata())
        values.update(metadata or {})
        values["signatures"] = ",".join(sorted([*functions, METADATA_SIGNATURE]))
        constants = {key: _constant(value) for key, value in values.items()}
        self.metadata_values = values
        functions[METADATA_SIGNATURE] = tf.function(
            lambda: {key: tf.identity(value) for key, value in constants.items()},
            input_signature=[],
        )
        self.function_names = sorted(functions)
        for name, function in functions.items():
            setattr(self, name, function)

    def signatures(self) -> dict[str, Any]:
        """Concrete functions by signature name (traces them), with ``serving_default``."""
        signatures = {
            name: getattr(self, name).get_concrete_function()
            for name in self.function_names
        }
        signatures["serving_default"] = signatures[DEFAULT_SIGNATURE]
        return signatures


@dataclasses.dataclass(frozen=True)
class ExportedVersion:
    """One written export: its version number, its folder and its metadata."""

    version: int
    path: str
    metadata: dict[str, Any]


def export_learner(
    learner: Servable,
    export_dir: str,
    *,
    transductive: bool = False,
    image_preprocessing: ImagePreprocessing | None = None,
    metadata: Mapping[str, Any] | None = None,
    limits: ServingLimits | None = None,
) -> ExportedVersion:
    """Writes the next version ``<export_dir>/<version>/`` of a SavedModel of ``learner``.

    The signatures are traced before anything is written; the SavedModel and
    ``assets.extra/tfmeta_export.json`` (the metadata) are written to a
    temporary folder renamed when complete (``layout.write_version``).

    Args:
      learner: a meta-learner whose model holds the theta to serve.
      export_dir: the model's base path for TF Serving, ``<models>/<model_name>``.
      transductive: normalize a query batch with its own statistics (a
        prediction then depends on the other queries of a request); default
        False, support statistics.
      image_preprocessing: adds ``adapt_and_predict_images`` (classification).
      metadata: extra values for the ``metadata`` signature (str, int,
        float, bool), e.g. the checkpoint exported.
      limits: the largest request answered (``ServingLimits``; default
        ``ServingLimits()``), recorded in the metadata.

    Raises:
      layout.LayoutError: ``export_dir`` is a version folder or inside one
        (checked before tracing).
      tfmeta.errors.DiskFullError: the disk filled while writing (one line
        naming the folder and the space needed); no version is left.
    """
    layout.check_model_folder(export_dir)
    module = ServingModule(
        learner,
        transductive=transductive,
        image_preprocessing=image_preprocessing,
        metadata=metadata,
        limits=limits,
    )
    signatures = module.signatures()

    def write(folder: str) -> None:
        # No custom-gradient functions: serving never differentiates a loaded
        # export (the adaptation's gradients are traced into its graph here),
        # and TensorFlow saves them one level deep only, so each nested one
        # logged a warning on every load (84 for a conv4 export).
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
        tf.saved_model.save(module, folder, signatures=signatures, options=options)
        os.makedirs(os.path.join(folder, "assets.extra"), exist_ok=True)
        with open(os.path.join(folder, METADATA_FILE), "w") as f:
            json.dump(module.metadata_values, f, indent=2, sort_keys=True)
            f.write("\n")

    try:
        version, path = layout.write_version(export_dir, write)
    except (tf.errors.ResourceExhaustedError, OSError) as error:
        if not errors.is_disk_full(error):
            raise
        variables = sum(v.numpy().nbytes for v in tf.nest.flatten(module.variables))
        raise errors.DiskFullError(  # the temporary folder is gone: no version written
            errors.disk_full_message(export_dir, "the export", variables, at_least=True)
        ) from None
    return ExportedVersion(version, path, dict(module.metadata_values))
