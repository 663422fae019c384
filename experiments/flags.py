"""Flags shared by the binaries: one per config key, so every key can be
overridden (``--inner_lr=0.1``), defined from the keys themselves."""

from __future__ import annotations

import re
from typing import Any

from absl import flags

from tfmeta.configs import BASE, get_config, keys

from . import define_cpu_threading_flag, define_malloc_arenas_flag

FLAGS = flags.FLAGS


def _registered_algorithms() -> list[str]:
    from tfmeta.algorithms import ALGORITHMS

    return list(ALGORITHMS)


flags.DEFINE_string(
    "algorithm",
    "maml",
    " | ".join(_registered_algorithms()) + " (the registry's algorithms)",
)
flags.DEFINE_string("dataset", "omniglot", "omniglot | sinusoid | folder | embeddings")
flags.DEFINE_string(
    "config",
    None,
    "a named config of tfmeta/configs for this algorithm and dataset "
    "(e.g. leo_miniimagenet_1shot); default: the pair's default config",
)
define_cpu_threading_flag()
define_malloc_arenas_flag()
flags.DEFINE_string(
    "workdir", None, "Run folder: config.json, checkpoints, summaries, results."
)


def _define_config_flags() -> dict[str, type | str]:
    """One flag per config key: every key of ``BASE`` and every key an
    algorithm declares (``Algorithm.defaults``), typed by its default (or
    ``keys.TYPES``), with the help of ``keys.HELP``. A new algorithm's
    settings reach the command line with no edit here."""
    from tfmeta.algorithms import ALGORITHMS

    defaults = dict(BASE)
    for algorithm in ALGORITHMS.values():
        for name, value in algorithm.defaults.items():
            defaults.setdefault(name, value)
    types: dict[str, type | str] = {}
    for name, default in defaults.items():
        if name in keys.INTERNAL:
            continue
        kind = keys.TYPES.get(name) or type(default)
        help_text = keys.HELP.get(name, f"config key {name} (default {default!r})")
        if kind is bool:
            flags.DEFINE_bool(name, None, help_text)
        elif kind is int:
            flags.DEFINE_integer(name, None, help_text)
        elif kind is float:
            flags.DEFINE_float(name, None, help_text)
        elif kind in ("ints", list, tuple):
            flags.DEFINE_list(name, None, help_text)
        else:
            flags.DEFINE_string(name, None, help_text)
        types[name] = kind
    return types


_CONFIG_FLAGS = _define_config_flags()


def flag_message(error: Exception) -> str:
    """A library error for the command line: a message that starts with a
    config key ("inner_lr must be ...") names its flag ("--inner_lr must ...")."""
    message = str(error)
    name = re.match(r"\w+", message)
    if name and name.group() in _CONFIG_FLAGS and not message.startswith("--"):
        return "--" + message
    return message


def given_settings() -> list[str]:
    """The run settings given on the command line: ``--algorithm``,
    ``--dataset``, ``--config`` and the config keys' flags."""
    names = ["algorithm", "dataset", "config", *_CONFIG_FLAGS]
    return [name for name in names if FLAGS[name].present]


def resolved_config() -> dict[str, Any]:
    """The algorithm/dataset defaults with every flag given on the command line applied."""
    config = get_config(FLAGS.algorithm, FLAGS.dataset, FLAGS.config)
    for name, kind in _CONFIG_FLAGS.items():
        value = getattr(FLAGS, name)
        if value is None:
            continue
        if kind == "ints":
            try:
                value = [int(v) for v in value]
            except ValueError:
                raise ValueError(
                    f"--{name} must be a comma-separated list of integers, got "
                    f"{','.join(value)!r}"
                ) from None
        config[name] = value
    return config
