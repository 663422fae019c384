"""What the binaries check before any work: a resolved config's settings
(``tfmeta.configs.check_config``) and the memory a run needs (``memory``),
a trained workdir's presence and stored config, and the folders a binary
writes in."""

from __future__ import annotations

import os
from typing import Any

from tfmeta.configs import BASE
from tfmeta.configs import check_config as check_settings
from tfmeta.configs.build import model_name
from tfmeta.configs.checks import input_shape

from . import InputError, memory

# Errors of a folder a binary would write in (check_output_folder).
FOLDER_ERRORS = (NotADirectoryError, PermissionError)


def check_config(config: dict[str, Any], *, stored: bool = False) -> None:
    """Raises ValueError for settings that cannot work, before any data is
    read: ``tfmeta.configs.check_config``, then the memory the run needs
    (``stored``, a trained run's config: only its evaluation has to fit)."""
    check_settings(config, stored=stored)
    memory.check_memory(
        config, model_name(config), input_shape(config), training=not stored
    )


def check_output_folder(path: str, flag: str, value: str | None = None) -> str:
    """``path`` expanded, where a binary may create or write in it
    (``value``: the flag's value, when ``path`` is a folder under it).

    Raises (naming ``--flag`` and the file or folder):
      NotADirectoryError: it, or a folder on its way, is a file.
      PermissionError: it (or the nearest existing folder, which would hold
        it) is not writable by this user.
    """
    folder = os.path.abspath(os.path.expanduser(path))
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    value = path if value is None else value
    named = os.path.abspath(os.path.expanduser(value))
    where = "" if existing == named else f": {existing}"
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"--{flag}={value}{where} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"--{flag}={value}{where} is not writable by this user")
    return folder


# What evaluate and export may set for a trained run: how the support set is
# used after training (its distorted copies), which the trained theta allows.
SERVING_KEYS = ("support_copies", "support_augment", "query_copies", "query_augment")


# What the members of an ensemble must share with the run it is evaluated or
# exported for: the data, its class split and the task shape.
ENSEMBLE_KEYS = (
    "dataset",
    "data_dir",
    "split_protocol",
    "split_seed",
    "n_way",
    "image_size",
    "channels",
)


def ensemble_configs(
    config: dict[str, Any], workdirs: list[str], settings: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The trained configs of the ensemble's other members (``--ensemble``),
    each checked as ``trained_workdir_config`` checks one, with the same
    ``settings``; an ``InputError`` names a member whose data, class split
    or task shape differs from ``config``'s (its held-out classes would
    differ) or whose problem is not classification."""
    members = []
    for workdir in workdirs:
        member = trained_workdir_config(workdir, settings)
        mismatch = ensemble_mismatch(member, config)
        if mismatch:
            raise InputError(
                f"--ensemble={workdir}: its {mismatch}; an ensemble's members share "
                "the data, split and task"
            )
        if member["dataset"] == "sinusoid":
            raise InputError(
                f"--ensemble={workdir}: an ensemble averages class probabilities; "
                "sinusoid runs regress"
            )
        members.append(member)
    return members


def _data_location(config: dict[str, Any]) -> str:
    from tfmeta.data.tasks import resolve_data_dir

    folder = resolve_data_dir(config)
    return os.path.realpath(folder) if folder else ""


def ensemble_mismatch(member: dict[str, Any], config: dict[str, Any]) -> str | None:
    """The first of ``ENSEMBLE_KEYS`` where ``member`` differs from
    ``config``, as "<key> is <member's>, the run's <config's>"; None where
    they agree. Data folders compare where they are read from now: --data_dir,
    else $TFMETA_OMNIGLOT_DIR, so a run trained with either flag or variable
    pairs with one trained with the other on the same files."""
    for key in ENSEMBLE_KEYS:
        ours, theirs = member.get(key), config.get(key)
        if key == "data_dir":
            ours, theirs = _data_location(member), _data_location(config)
        if ours != theirs:
            return f"{key} is {ours!r}, the run's {theirs!r}"
    return None


def trained_workdir_config(
    workdir: str, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The stored config of a training workdir that holds a checkpoint, with
    keys added to the configs after the run was trained at their neutral
    defaults and ``settings`` (``SERVING_KEYS`` only) over it, checked as a
    resolved config is; otherwise an ``InputError`` saying what is missing
    or wrong (before any data or model is built)."""
    from tfmeta.training import Workdir

    run = Workdir(workdir)
    try:
        stored = run.read_config()
    except (FileNotFoundError, ValueError) as error:
        raise InputError(str(error)) from error
    if not run.has_checkpoint():
        raise InputError(
            f"no checkpoint in {run.latest.directory} or {run.best.directory}: "
            "has this run saved one yet?"
        )
    unknown = sorted(set(settings or {}) - set(SERVING_KEYS))
    if unknown:
        raise ValueError(
            f"only {SERVING_KEYS} may be set for a trained run, got {unknown}"
        )
    config = {**BASE, **stored, **(settings or {})}
    try:
        check_config(config, stored=True)
    except KeyError as error:  # a hand-edited file without a key
        raise InputError(
            f"{run.config_path} has no {error.args[0]!r}: is it the file the run wrote?"
        ) from error
    except ValueError as error:  # a key of the file, or one of ``settings``
        message = str(error).removeprefix("--")
        if any(message.startswith(key) for key in settings or {}):
            raise InputError(f"--{message}") from error
        raise InputError(f"{run.config_path}: {message}") from error
    return config
