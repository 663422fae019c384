"""The folder layout TF Serving loads: numbered versions (``models_config``
writes the file that names the models).

TF Serving watches a model's base path ``<models>/<model_name>/`` and serves
the highest sub-folder whose name is an integer (``1/``, ``2/``, ...), each a
SavedModel. A version is written under a hidden temporary name in the same
folder and renamed when complete: the rename is atomic, so the server (and
the next export) never sees half a version, and a folder whose name is not an
integer is ignored by both.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

TEMPORARY_PREFIX = ".export-tmp-"


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
