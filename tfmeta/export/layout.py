"""The folder layout TF Serving loads: numbered versions and ``models.config``.

TF Serving watches a model's base path ``<models>/<model_name>/`` and serves
the highest sub-folder whose name is an integer (``1/``, ``2/``, ...), each a
SavedModel. A version is written under a hidden temporary name in the same
folder and renamed when complete: the rename is atomic, so the server (and
the next export) never sees half a version, and a folder whose name is not an
integer is ignored by both.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable

TEMPORARY_PREFIX = ".export-tmp-"
_CONFIG_BLOCK = re.compile(r"config\s*\{(?P<body>[^{}]*)\}", re.MULTILINE)
_FIELD = re.compile(r'(?P<key>name|base_path|model_platform)\s*:\s*"(?P<value>[^"]*)"')


def existing_versions(export_dir: str) -> list[int]:
    """The version numbers in ``export_dir`` (sub-folders named by an integer), sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    )


def next_version(export_dir: str) -> int:
    """One more than the highest existing version, 1 for a new model."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def write_version(export_dir: str, write: Callable[[str], None]) -> tuple[int, str]:
    """Calls ``write(folder)`` on a temporary folder, then renames it to the next version.

    Never overwrites a version: if another export took the number meanwhile,
    the next free number is used. When ``write`` raises, the temporary folder
    is removed and the error propagates, so no partial version is left.

    Returns:
      ``(version, path of <export_dir>/<version>)``.
    """
    os.makedirs(export_dir, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=export_dir)
    try:
        write(temporary)
        while True:
            version = next_version(export_dir)
            target = os.path.join(export_dir, str(version))
            try:
                # Fails if ``target`` exists and is not empty (a version never is).
                os.rename(temporary, target)
            except OSError:
                if os.path.isdir(target) and os.listdir(target):
                    continue
                raise
            return version, target
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary, ignore_errors=True)


def read_models_config(path: str) -> list[dict[str, str]]:
    """The model entries (name, base_path, model_platform) of a ``models.config``.

    Reads the plain ``model_config_list { config { ... } ... }`` text format
    that ``write_models_config`` writes.

    Raises:
      ValueError: the file holds something else (it is not overwritten then).
    """
    with open(path) as f:
        text = f.read()
    entries = []
    for block in _CONFIG_BLOCK.finditer(text):
        fields = {m["key"]: m["value"] for m in _FIELD.finditer(block["body"])}
        if "name" not in fields or "base_path" not in fields:
            break
        entries.append(fields)
    rebuilt = _format_models_config(entries)
    if _normalized(rebuilt) != _normalized(text):
        raise ValueError(
            f"{path} is not a models.config written by tfmeta (it holds settings other than "
            "name, base_path and model_platform); edit it by hand or write another models_config file"
        )
    return entries


def _normalized(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _format_models_config(entries: list[dict[str, str]]) -> str:
    lines = ["model_config_list {"]
    for entry in entries:
        lines += [
            "  config {",
            f'    name: "{entry["name"]}"',
            f'    base_path: "{entry["base_path"]}"',
            f'    model_platform: "{entry.get("model_platform", "tensorflow")}"',
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_models_config(path: str, model_name: str, base_path: str) -> str:
    """Adds or updates ``model_name`` in the TF Serving model config file ``path``.

    Other models' entries are kept, so one file can serve every model of a
    ``<models>/`` folder (``tensorflow_model_server --model_config_file=path``).
    ``base_path`` is the model folder as the server sees it (e.g.
    ``/models/<model_name>`` inside the TF Serving container). Written
    atomically. Returns the file's text.
    """
    for label, value in (("model name", model_name), ("base path", base_path)):
        if not value or '"' in value or "\n" in value:
            raise ValueError(
                f"{label} must be non-empty without quotes or newlines, got {value!r}"
            )
    entries = read_models_config(path) if os.path.exists(path) else []
    entry = {"name": model_name, "base_path": base_path, "model_platform": "tensorflow"}
    names = [e["name"] for e in entries]
    if model_name in names:
        entries[names.index(model_name)] = entry
    else:
        entries.append(entry)
    text = _format_models_config(entries)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)
    return text
