"""The model, the outer optimizer and the learner of a resolved config."""

from __future__ import annotations

from typing import Any

import keras

from tfmeta import models
from tfmeta.algorithms import get_algorithm
from tfmeta.core import Learner
from tfmeta.core.outer_optimizers import make_outer_optimizer
from tfmeta.training.backbone import load_backbone


def model_name(config: dict[str, Any]) -> str:
    """--model, else leo (LEO), linear (embeddings), mlp (sinusoid) or conv4."""
    if config.get("model"):
        return config["model"]
    required = get_algorithm(config["algorithm"]).model
    if required:
        return required
    if config["dataset"] == "embeddings":
        return "linear"
    return "mlp" if config["dataset"] == "sinusoid" else "conv4"


def build_model(
    config: dict[str, Any], input_shape: tuple[int, ...], *, pretrained: bool = False
) -> keras.Model:
    """The model of ``config`` for inputs ``input_shape``, initialized by its
    seed; with ``pretrained`` (a fresh training run: a resumed, evaluated or
    exported one restores theta from its checkpoint instead) and a
    ``pretrained_backbone``, every layer but the head from that backbone."""
    model = _seeded_model(config, input_shape)
    if pretrained and config.get("pretrained_backbone"):
        load_backbone(model, config["pretrained_backbone"], config)
    return model


def _seeded_model(config: dict[str, Any], input_shape: tuple[int, ...]) -> keras.Model:
    model = model_name(config)
    if model == "leo":
        return models.leo_model(
            input_shape[0],
            num_latents=int(config["num_latents"]),
            inner_lr=config["inner_lr"],
            finetune_lr=config["finetune_lr"],
            seed=config["seed"],
        )
    if model == "linear":
        return models.linear_classifier(
            config["n_way"], input_shape[0], seed=config["seed"]
        )
    if config["dataset"] == "sinusoid":
        return models.mlp(
            output_dim=1,
            input_dim=1,
            hidden=tuple(config["hidden"]),
            seed=config["seed"],
        )
    if model == "resnet12":
        return models.resnet12(
            config["n_way"],
            input_shape=input_shape,
            filters=config["filters"],
            seed=config["seed"],
        )
    return models.conv4(
        config["n_way"],
        input_shape=input_shape,
        filters=config["filters"],
        depth=config["depth"],
        pooling=config["pooling"],
        seed=config["seed"],
    )


def build_outer_optimizer(config: dict[str, Any]) -> keras.optimizers.Optimizer:
    return make_outer_optimizer(
        config["outer_optimizer"],
        config["outer_lr"],
        clip_norm=config["gradient_clip_norm"],
        # The schedule's length is fixed when the run starts (schedule_steps):
        # resuming with a larger num_steps does not rewrite the steps taken.
        # A run of no step (num_steps=0) takes none on any schedule.
        schedule_steps=max(1, int(config.get("schedule_steps") or config["num_steps"])),
        final_lr=config["final_outer_lr"],
        decay_steps=config["outer_lr_decay_steps"],
        decay_rate=config["outer_lr_decay_rate"],
    )


def problem_of(config: dict[str, Any]) -> str:
    return "regression" if config["dataset"] == "sinusoid" else "classification"


def build_learner(
    config: dict[str, Any], model: keras.Model | tuple[int, ...]
) -> Learner:
    """The learner of ``config`` around ``model``, or around the config's
    model built for inputs of shape ``model`` (``build_model``, from its
    ``pretrained_backbone`` where it names one)."""
    if not isinstance(model, keras.Model):
        model = build_model(config, tuple(model), pretrained=True)
    algorithm = get_algorithm(config["algorithm"])
    return algorithm.build(
        config, model, build_outer_optimizer(config), problem_of(config)
    )
