"""Exports a training workdir's learner as a SavedModel for TF Serving.

  python -m experiments.export --workdir=/tmp/tfmeta_runs/maml \
      --export_dir=/tmp/models/omniglot_maml [--checkpoint=best|latest] \
      [--base_path=/models/omniglot_maml] [--transductive] \
      [--max_support_examples=1000] [--max_query_examples=1000] \
      [--max_image_pixels=16777216] [--max_abs_input=1e6] \
      [--support_copies=8] [--support_augment=1] [--query_copies=8] \
      [--query_augment=1] [--ensemble=RUN2,RUN3]

Reads the run's stored config, restores the best checkpoint by
meta-validation (or the latest), and writes the next version
``<export_dir>/<version>/`` (a SavedModel, complete or absent) and the TF
Serving model config ``<export_dir>/../models.config`` naming the model
(``--model_name``, default the export folder's name) with ``--base_path``
(default the export folder; inside the TF Serving container, e.g.
``/models/<model_name>``). The served inner loop is the meta-test one: the
config's ``eval_inner_steps`` steps with ``inner_lr``. Larger requests than
the ``--max_*`` limits are refused by the served graph (``ServingLimits``).
An ``--export_dir`` that is a version folder, or inside one, is refused
before anything is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from tfmeta.configs import BASE
from tfmeta.configs.build import build_learner, build_model
from tfmeta.core.ensemble import Ensemble
from tfmeta.data.tasks import task_sets
from tfmeta.errors import DiskFullError
from tfmeta.export import (
    ImagePreprocessing,
    LayoutError,
    ModelsConfigError,
    ServingLimits,
    export_learner,
    read_models_config,
    write_models_config,
)
from tfmeta.export.layout import check_model_folder
from tfmeta.export.models_config import check_model_entry
from tfmeta.training import CheckpointError, Workdir, restore_checkpoint
from tfmeta.training.workdir import CHECKPOINTS

from . import InputError, checks, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module registers no flags."""
    flags.DEFINE_string(
        "workdir", None, "the training run's folder (config.json, checkpoints)"
    )
    flags.DEFINE_string(
        "export_dir",
        None,
        "the model's folder <models>/<model_name>; each export adds a numbered version in it",
    )
    flags.DEFINE_enum(
        "checkpoint", "best", list(CHECKPOINTS), "best (by meta-validation) | latest"
    )
    flags.DEFINE_bool(
        "transductive",
        False,
        "normalize a request's queries with their own batch statistics (a prediction then depends "
        "on the other queries of the request); default: with the support set's statistics",
    )
    flags.DEFINE_string(
        "model_name", None, "TF Serving model name (default: export_dir's folder name)"
    )
    flags.DEFINE_string(
        "base_path",
        None,
        "the model folder as the model server sees it (default: export_dir's absolute path; "
        "in the tensorflow/serving container: /models/<model_name>)",
    )
    flags.DEFINE_string(
        "models_config",
        None,
        "TF Serving model config file to update (default: <export_dir>/../models.config)",
    )
    flags.DEFINE_list(
        "ensemble",
        None,
        "other runs' workdirs (same data, split and task) exported with --workdir's as one "
        "ensemble: the mean of their class probabilities",
    )
    flags.DEFINE_integer(
        "support_copies",
        None,
        "distorted copies of each request's support set to adapt to (default: the run's "
        "own; the figure experiments.evaluate reports with the same value)",
    )
    flags.DEFINE_float(
        "support_augment",
        None,
        "strength of the support copies' affine maps (default: the run's own)",
    )
    flags.DEFINE_integer(
        "query_copies",
        None,
        "distorted copies of each query whose mean class probabilities answer it "
        "(default: the run's own)",
    )
    flags.DEFINE_float(
        "query_augment",
        None,
        "strength of the query copies' affine maps (default: the run's own)",
    )
    limits = ServingLimits()
    flags.DEFINE_integer(
        "max_support_examples",
        limits.max_support_examples,
        "the served model refuses requests with more support examples",
    )
    flags.DEFINE_integer(
        "max_query_examples",
        limits.max_query_examples,
        "the served model refuses requests with more queries",
    )
    flags.DEFINE_integer(
        "max_image_pixels",
        limits.max_image_pixels,
        "the served model refuses encoded images whose header gives more pixels "
        "(height x width), before decoding them",
    )
    flags.DEFINE_float(
        "max_abs_input",
        limits.max_abs_input,
        "the served model refuses float inputs larger in absolute value",
    )


def input_shape(config: dict[str, Any]) -> tuple[int, ...]:
    """The shape of one model input, as ``tfmeta.data.tasks`` finds it.

    Images and sinusoids need no data read; other datasets (e.g. embedding
    vectors, whose size is in the files) are loaded.
    """
    if config["dataset"] == "sinusoid":
        return (1,)
    if config["dataset"] in ("omniglot", "folder"):
        channels = 1 if config["dataset"] == "omniglot" else int(config["channels"])
        return (int(config["image_size"]), int(config["image_size"]), channels)
    return tuple(task_sets(config).input_shape)


def image_preprocessing(config: dict[str, Any]) -> ImagePreprocessing | None:
    """The training preprocessing of the run's images, applied in the graph to encoded images."""
    if config["dataset"] == "omniglot":
        return ImagePreprocessing("omniglot", int(config["image_size"]))
    if config["dataset"] == "folder":
        return ImagePreprocessing(
            "folder", int(config["image_size"]), int(config["channels"])
        )
    return None


def restore_learner(workdir: str, config: dict[str, Any], which: str):
    """The run's learner with theta from the ``which`` checkpoint; returns (learner, path)."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
    learner = build_learner(config, build_model(config, input_shape(config)))
    return learner, restore_checkpoint(workdir, learner, which)


def export_paths(
    export_dir: str,
    model_name: str | None = None,
    base_path: str | None = None,
    models_config: str | None = None,
) -> tuple[str, str, str, str]:
    """(export_dir, model_name, base_path, models_config) with their
    defaults, checked (``export_workdir``'s Raises) before anything is read."""
    check_model_folder(export_dir)
    checks.check_output_folder(export_dir, "export_dir")
    export_dir = os.path.abspath(export_dir)
    model_name = model_name or os.path.basename(export_dir.rstrip(os.sep))
    base_path = base_path or export_dir
    models_config = models_config or os.path.join(
        os.path.dirname(export_dir), "models.config"
    )
    check_model_entry(model_name, base_path)
    if os.path.isdir(models_config):
        raise ModelsConfigError(f"{models_config} is a folder, not a model config file")
    folder = os.path.dirname(os.path.abspath(models_config))
    checks.check_output_folder(folder, "models_config", models_config)
    if os.path.exists(models_config):  # one that cannot be updated fails now
        read_models_config(models_config)
    return export_dir, model_name, base_path, models_config


def export_workdir(
    workdir: str,
    export_dir: str,
    *,
    which: str = "best",
    transductive: bool = False,
    model_name: str | None = None,
    base_path: str | None = None,
    models_config: str | None = None,
    limits: ServingLimits | None = None,
    settings: dict[str, Any] | None = None,
    ensemble: Sequence[str] = (),
) -> dict[str, Any]:
    """Exports the next version of ``workdir``'s learner to ``export_dir``; updates models.config.

    ``settings``: values of ``experiments.checks.SERVING_KEYS`` in place of
    the run's (checked by ``checks.trained_workdir_config``). ``ensemble``:
    other runs' workdirs (checked by ``checks.ensemble_configs``) exported
    with this one as one ``tfmeta.core.ensemble.Ensemble``, each from its own
    ``which`` checkpoint.

    Returns {"version", "path", "checkpoint", "models_config", "model_name",
    "base_path", "metadata"}.

    Raises (before anything is read or written):
      LayoutError: ``export_dir`` is a version folder or inside one.
      ModelsConfigError: ``models_config`` cannot be read or updated.
      NotADirectoryError, PermissionError: ``export_dir`` or the folder of
        ``models_config`` is (or lies under) a file, or cannot be written.
      ValueError: the model name or base path cannot be served.
    """
    export_dir, model_name, base_path, models_config = export_paths(
        export_dir, model_name, base_path, models_config
    )

    # Keys added to the configs after the run was trained take their neutral defaults.
    def stored(run: str) -> dict[str, Any]:
        return {**BASE, **Workdir(run).read_config(), **(settings or {})}

    config = stored(workdir)
    learner, checkpoint = restore_learner(workdir, config, which)
    if ensemble:
        if transductive:
            raise ValueError(
                "--transductive: an ensemble serves each member's own normalization"
            )
        members = [restore_learner(m, stored(m), which)[0] for m in ensemble]
        learner = Ensemble([learner, *members])
    metadata = {
        "dataset": config["dataset"],
        "k_shot": int(config["k_shot"]),
        "checkpoint": os.path.relpath(checkpoint, workdir),
        "checkpoint_step": int(checkpoint.rsplit("-", 1)[-1]),
    }
    exported = export_learner(
        learner,
        export_dir,
        transductive=transductive,
        image_preprocessing=image_preprocessing(config),
        metadata=metadata,
        limits=limits,
    )
    write_models_config(models_config, model_name, base_path)
    return {
        "version": exported.version,
        "path": exported.path,
        "checkpoint": checkpoint,
        "models_config": models_config,
        "model_name": model_name,
        "base_path": base_path,
        "metadata": exported.metadata,
    }


def _export_flag_message(error: ValueError) -> str:
    """The message of a refused folder or name, naming its flag."""
    message = str(error)
    for label, flag in (("model name", "model_name"), ("base path", "base_path")):
        if message.startswith(label):
            return f"--{flag}: {message}"
    return message


def main(argv):
    del argv
    if not FLAGS.workdir or not FLAGS.export_dir:
        raise app.UsageError("--workdir and --export_dir are required")
    try:
        limits = ServingLimits(
            max_support_examples=FLAGS.max_support_examples,
            max_query_examples=FLAGS.max_query_examples,
            max_image_pixels=FLAGS.max_image_pixels,
            max_abs_input=FLAGS.max_abs_input,
        )
    except ValueError as error:
        raise InputError(f"--{error}") from None
    settings = {
        key: FLAGS[key].value
        for key in checks.SERVING_KEYS
        if FLAGS[key].value is not None
    }
    config = checks.trained_workdir_config(FLAGS.workdir, settings)
    checks.ensemble_configs(config, FLAGS.ensemble or [], settings)
    if FLAGS.ensemble and FLAGS.transductive:
        raise InputError(
            "--transductive: an ensemble serves each member's own normalization"
        )
    try:
        export_paths(
            FLAGS.export_dir, FLAGS.model_name, FLAGS.base_path, FLAGS.models_config
        )
    except ModelsConfigError as error:
        raise InputError(f"{error} (--models_config)") from None
    except LayoutError as error:
        raise InputError(f"{error} (--export_dir)") from None
    except (ValueError, *checks.FOLDER_ERRORS) as error:  # folders, names
        raise InputError(_export_flag_message(error)) from None
    try:
        result = export_workdir(
            FLAGS.workdir,
            FLAGS.export_dir,
            which=FLAGS.checkpoint,
            transductive=FLAGS.transductive,
            model_name=FLAGS.model_name,
            base_path=FLAGS.base_path,
            models_config=FLAGS.models_config,
            limits=limits,
            settings=settings,
            ensemble=FLAGS.ensemble or (),
        )
    except ModelsConfigError as error:  # before the export: its message only
        raise InputError(f"{error} (--models_config)") from None
    except LayoutError as error:  # before the export: its message only
        raise InputError(f"{error} (--export_dir)") from None
    except (
        CheckpointError,
        DiskFullError,
    ) as error:  # damaged checkpoints; a full disk
        raise InputError(str(error)) from None
    metadata = result["metadata"]
    print(
        f"exported {metadata['algorithm']} ({adaptation_summary(metadata)}) "
        f"from {result['checkpoint']} to {result['path']} (version {result['version']})"
    )
    print(f"signatures: {metadata['signatures']} (serving_default = adapt_and_predict)")
    print(
        f"requests of at most {metadata['max_support_examples']} support examples and "
        f"{metadata['max_query_examples']} queries, images of at most "
        f"{metadata['max_image_pixels']} pixels, float inputs of at most "
        f"{metadata['max_abs_input']:g} in absolute value"
    )
    print(
        f"TF Serving config {result['models_config']}: model {result['model_name']!r}, "
        f"base path {result['base_path']}"
    )


def adaptation_summary(metadata: dict[str, Any]) -> str:
    """What the export's adaptation runs, in words, from the learner's own
    description: inner steps and alpha where the learner has them (MAML's
    family, LEO), what adapts (``adapt_variables``: weights, prototypes,
    latent codes), and how queries are normalized."""
    parts = [str(metadata.get("dataset", metadata.get("problem", "")))]
    if metadata.get("ensemble_size"):
        parts.append(f"an ensemble of {metadata['ensemble_size']} runs")
    steps = metadata.get("inner_steps")
    if steps:
        alpha = metadata.get("inner_lr")
        parts.append(
            f"{steps} inner step{'s' * (steps != 1)}"
            + (f", alpha {alpha:g}" if isinstance(alpha, (int, float)) else "")
        )
    if "adapt_variables" in metadata:
        parts.append(f"adapts {metadata['adapt_variables']}")
    for kind in ("support", "query"):
        if metadata.get(f"{kind}_copies"):
            parts.append(
                f"{metadata[f'{kind}_copies']} {kind} copies at strength "
                f"{metadata[f'{kind}_augment']:g}"
            )
    parts.append(f"transductive={metadata.get('transductive', False)}")
    return "; ".join(part for part in parts if part)


def run() -> None:
    """The console script ``tfmeta-export``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
