"""A pretrained start for image learners: the conv4 backbone that
``experiments.embed`` trains by classification over the meta-train classes.

"A good embedding is all you need" (Tian et al. 2020; Meta-Baseline, Chen et
al. 2021): a conv4 trained by plain softmax classification on the meta-train
classes is a strong few-shot start. ``experiments.embed`` writes it as

  <output_dir>/backbone.weights.h5   Keras weights of a ``tfmeta.models.conv4(
                                     num_classes, pooling="max")``: conv{i}
                                     (kernel, bias), norm{i} (gamma, beta) and
                                     head (the meta-train classifier)
  <output_dir>/backbone.json         its architecture and the class split it saw

and ``--pretrained_backbone=<output_dir>`` (or the ``.weights.h5`` file) makes
a fresh training run start from it: every layer but the head takes the saved
weights, the head keeps its fresh initialization (an N-way head; MAML adapts
it, Proto-MAML sets it per task). The backbone must have seen only meta-train
classes of the run's own split: a backbone of another split (protocol, seed or
data), architecture or image size is refused, naming each difference.
"""

from __future__ import annotations

import os
from typing import Any

import keras

from tfmeta.models.conv import conv4
from tfmeta.training.files import read_json, write_json

WEIGHTS_FILE = "backbone.weights.h5"
INFO_FILE = "backbone.json"
FORMAT = 1
HEAD = "head"
# What must agree between a backbone and a run (key of backbone.json and of
# the run's config, in the order the differences are named).
ARCHITECTURE = ("filters", "depth", "pooling", "image_size", "channels")
SPLIT = ("dataset", "split_protocol", "split_seed")
_REQUIRED = (
    "format",
    "model",
    "num_classes",
    "input_shape",
    "weights",
    *ARCHITECTURE,
    *SPLIT,
    "data_source",
)


def save_backbone(
    model: keras.Model, output_dir: str, description: dict[str, Any]
) -> str:
    """Writes ``model`` (a built ``conv4(..., pooling="max")``, its head over
    the meta-train classes) to ``<output_dir>/backbone.weights.h5`` and
    ``description`` (architecture and split: the keys of ``_REQUIRED`` but
    format, model, num_classes, input_shape and weights, which are added) to
    ``backbone.json``; returns the weights' path. The weights are written
    under a temporary name and renamed, then the JSON: a description always
    names complete weights."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, WEIGHTS_FILE)
    temporary = os.path.join(output_dir, f"backbone.tmp{os.getpid()}.weights.h5")
    model.save_weights(temporary)
    os.replace(temporary, path)
    info = {
        **description,
        "format": FORMAT,
        "model": "conv4",
        "num_classes": int(model.get_layer(HEAD).units),
        "input_shape": [int(size) for size in model.input_shape[1:]],
        "weights": WEIGHTS_FILE,
    }
    write_json(os.path.join(output_dir, INFO_FILE), info)
    return path


def backbone_paths(path: str) -> tuple[str, str]:
    """(weights, description) of ``--pretrained_backbone``: a folder holding
    backbone.weights.h5 and backbone.json, or the weights file itself."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        return os.path.join(path, WEIGHTS_FILE), os.path.join(path, INFO_FILE)
    return path, os.path.join(os.path.dirname(path), INFO_FILE)


def read_backbone_info(path: str) -> dict[str, Any]:
    """The description beside the backbone ``path``; ValueError (one line,
    naming the file) if either file is missing or the description unreadable."""
    weights, info_path = backbone_paths(path)
    where = f"pretrained_backbone {path}"
    if not os.path.exists(weights):
        missing = "does not exist" if weights == path else f"has no {WEIGHTS_FILE}"
        raise ValueError(
            f"{where} {missing} (write one with python -m experiments.embed "
            "--output_dir=<folder>)"
        )
    if not weights.endswith(".weights.h5"):
        raise ValueError(
            f"{where}: expected a .weights.h5 file or the folder holding {WEIGHTS_FILE}"
        )
    if not os.path.exists(info_path):
        raise ValueError(
            f"{where}: no {INFO_FILE} beside it (experiments.embed writes both)"
        )
    try:
        info = read_json(info_path)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(
            f"{where}: cannot read {info_path} ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(info, dict) or any(key not in info for key in _REQUIRED):
        missing = (
            [k for k in _REQUIRED if k not in info] if isinstance(info, dict) else []
        )
        raise ValueError(
            f"{where}: {info_path} is not a backbone description"
            + (f" (missing {', '.join(missing)})" if missing else "")
        )
    if info["format"] != FORMAT or info["model"] != "conv4":
        raise ValueError(
            f"{where}: {info_path} describes format {info['format']!r} model "
            f"{info['model']!r}; expected format {FORMAT} model 'conv4'"
        )
    return info


def expected_of(config: dict[str, Any]) -> dict[str, Any]:
    """What a run of ``config`` needs of a backbone (keys of backbone.json)."""
    channels = 1 if config["dataset"] == "omniglot" else int(config["channels"])
    expected = {
        "filters": int(config["filters"]),
        "depth": int(config["depth"]),
        "pooling": config["pooling"],
        "image_size": int(config["image_size"]),
        "channels": channels,
        "dataset": config["dataset"],
        "split_protocol": config["split_protocol"],
        "split_seed": int(config["split_seed"]),
    }
    if config.get("data_source"):  # known once the data is read
        expected["data_source"] = config["data_source"]
    return expected


def backbone_differences(info: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """Each way the backbone ``info`` does not fit a run of ``config``:
    "<key> is <backbone's> in the backbone, expected the run's <value>"."""
    return [
        f"{key} is {info[key]!r} in the backbone, expected the run's {value!r}"
        for key, value in expected_of(config).items()
        if info[key] != value
    ]


def check_backbone(config: dict[str, Any]) -> dict[str, Any]:
    """Raises ValueError (one line naming each difference) unless
    ``config["pretrained_backbone"]`` is a backbone a run of ``config`` can
    start from; returns its description. Reads no data and no weights."""
    path = config["pretrained_backbone"]
    info = read_backbone_info(path)
    differences = backbone_differences(info, config)
    if differences:
        raise ValueError(
            f"pretrained_backbone {path} does not fit this run: "
            + "; ".join(differences)
            + " (the backbone must be the run's conv4 trained on the meta-train "
            "classes of the same split)"
        )
    return info


def saved_model(path: str, info: dict[str, Any] | None = None) -> keras.Model:
    """The saved conv4 (its head over the meta-train classes) with its weights."""
    info = info or read_backbone_info(path)
    model = conv4(
        int(info["num_classes"]),
        input_shape=tuple(info["input_shape"]),
        filters=int(info["filters"]),
        depth=int(info["depth"]),
        pooling=info["pooling"],
        seed=0,  # overwritten; seeded so that no global random state is drawn
        name="pretrained",
    )
    weights, _ = backbone_paths(path)
    try:
        model.load_weights(weights)
    except (OSError, ValueError, KeyError) as error:  # damaged, or not this conv4
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"pretrained_backbone {path}: cannot load {weights} ({reason[:200]})"
        ) from None
    return model


def load_backbone(
    model: keras.Model, path: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Sets every layer of ``model`` but its head to the saved backbone's
    weights, after checking the backbone against ``config`` (architecture and
    split; ``config["data_source"]`` too once set) and ``model`` (its input
    shape and layers). The head keeps its initialization. Returns the
    backbone's description; ValueError, naming the value, for a mismatch."""
    info = check_backbone({**config, "pretrained_backbone": path})
    shape = [int(size) for size in model.input_shape[1:]]
    if shape != list(info["input_shape"]):
        raise ValueError(
            f"pretrained_backbone {path}: input shape is {info['input_shape']} in "
            f"the backbone, the model's is {shape}"
        )
    saved = saved_model(path, info)
    layers = [layer for layer in model.layers if layer.weights and layer.name != HEAD]
    names = {layer.name for layer in saved.layers if layer.weights} - {HEAD}
    missing = sorted(names - {layer.name for layer in layers})
    if missing:
        raise ValueError(
            f"pretrained_backbone {path}: the model has no layer {', '.join(missing)}"
        )
    for layer in layers:
        if layer.name not in names:
            raise ValueError(
                f"pretrained_backbone {path}: the backbone has no layer {layer.name!r}"
            )
        source = saved.get_layer(layer.name)
        if len(source.weights) != len(layer.weights):
            raise ValueError(
                f"pretrained_backbone {path}: layer {layer.name!r} has "
                f"{len(source.weights)} weights in the backbone, expected {len(layer.weights)}"
            )
        for target, value in zip(layer.weights, source.weights):
            if tuple(target.shape) != tuple(value.shape):
                raise ValueError(
                    f"pretrained_backbone {path}: {target.path} has shape "
                    f"{tuple(value.shape)} in the backbone, expected {tuple(target.shape)}"
                )
            target.assign(value)
    return info
