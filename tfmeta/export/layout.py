"""The folder layout TF Serving loads: numbered versions (``models_config``
writes the file that names the models).

TF Serving watches a model's base path ``<models>/<model_name>/`` and serves
the highest sub-folder whose name is an integer (``1/``, ``2/``, ...), each a
SavedModel. A version is written under a hidden temporary name in the same
folder and renamed when complete: the rename is atomic, so the server (and
the next export) never sees half a version, and a folder whose name is not an
integer is ignored by both.

* A model folder is never a version folder nor inside one (``1/1/`` would
  be a SavedModel the server never loads, inside one it serves).
* A version is as readable as its model folder: its folders take the model
  folder's read and search bits, its files the read bits, and neither is
  writable by anyone but its owner. A model server running as another user
  reads a version wherever it can list the model folder.
* A temporary folder is named ``.export-tmp-<host>-<pid>-<random>``. One
  left by an export that died (killed, out of memory, the machine down) is
  removed by the next export: on the same host when its process is gone,
  from another host (whose processes cannot be seen) when it is older than
  ``STALE_AFTER_SECONDS``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable

TEMPORARY_PREFIX = ".export-tmp-"
STALE_AFTER_SECONDS = 24 * 3600
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class LayoutError(ValueError):
    """An export folder that is not a model folder; the message names it."""


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


def is_saved_model(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in SAVED_MODEL_FILES)


def check_model_folder(export_dir: str) -> None:
    """Raises LayoutError where ``export_dir`` cannot be a model's base path:
    a SavedModel or inside one, named by an integer (a version's name), or
    the ``<models>`` folder holding ``models.config``."""
    path = os.path.abspath(export_dir)
    folder = path
    while True:
        if is_saved_model(folder):
            where = "is" if folder == path else f"is inside {folder}, which is"
            raise LayoutError(
                f"export_dir {path} {where} a SavedModel (a model version): give the "
                f"model's folder, e.g. {os.path.dirname(folder)}"
            )
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    name = os.path.basename(path)
    if name.isdigit():
        raise LayoutError(
            f"export_dir {path} is named like a version: TF Serving would take it for "
            f"version {int(name)} of {os.path.dirname(path)}; give the model's folder, "
            "named by the model, and the export adds the next version in it"
        )
    if os.path.isfile(os.path.join(path, "models.config")):
        raise LayoutError(
            f"export_dir {path} holds models.config, so it is the folder of all models: "
            f"give one model's folder, e.g. {os.path.join(path, '<model_name>')}"
        )


# ------------------------------------------------------ temporary folders
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _process_alive(pid: int) -> bool:
    if pid <= 0:  # not a process (0 would signal our own process group)
        return False
    try:
        os.kill(pid, 0)
    except PermissionError:  # alive, another user's
        return True
    except (OSError, OverflowError):  # no such process
        return False
    return True


def is_stale(name: str, age_seconds: float) -> bool:
    """Whether the temporary folder ``name`` was left by an export that died."""
    fields = name[len(TEMPORARY_PREFIX) :].rsplit("-", 2)
    if len(fields) == 3 and fields[0] == _host() and fields[1].isdigit():
        return not _process_alive(int(fields[1]))
    # Another host's, or without a process id (an older tfmeta's).
    return age_seconds > STALE_AFTER_SECONDS


def remove_stale_temporaries(export_dir: str) -> list[str]:
    """Removes the temporary folders of dead exports in ``export_dir``; returns their paths."""
    removed = []
    now = time.time()
    for name in os.listdir(export_dir) if os.path.isdir(export_dir) else ():
        path = os.path.join(export_dir, name)
        if not name.startswith(TEMPORARY_PREFIX):
            continue
        try:
            info = os.lstat(path)
        except FileNotFoundError:  # removed meanwhile
            continue
        if stat.S_ISDIR(info.st_mode) and is_stale(name, now - info.st_mtime):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_temporary(export_dir: str) -> str:
    """A new private folder ``<export_dir>/.export-tmp-<host>-<pid>-<random>``."""
    prefix = f"{TEMPORARY_PREFIX}{_host()}-{os.getpid()}-"
    return tempfile.mkdtemp(prefix=prefix, dir=export_dir)


def share_like(folder: str, model_folder: str) -> None:
    """Gives ``folder``'s tree the read access of ``model_folder``: folders its
    read and search bits (owner: all), files its read bits (owner: read and
    write); no write bit for group or others."""
    readable = stat.S_IMODE(os.stat(model_folder).st_mode) & 0o055
    folder_mode = 0o700 | readable
    file_mode = 0o600 | (readable & 0o044)
    for root, folders, files in os.walk(folder):
        os.chmod(root, folder_mode)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, file_mode)


def write_version(export_dir: str, write: Callable[[str], None]) -> tuple[int, str]:
    """Calls ``write(folder)`` on a temporary folder, then renames it to the next version.

    Never overwrites a version: if another export took the number meanwhile,
    the next free number is used. When ``write`` raises, the temporary folder
    is removed and the error propagates, so no partial version is left. The
    temporary folders of dead exports are removed first.

    Returns:
      ``(version, path of <export_dir>/<version>)``.

    Raises:
      LayoutError: ``export_dir`` is not a model folder (``check_model_folder``).
    """
    check_model_folder(export_dir)
    os.makedirs(export_dir, exist_ok=True)
    remove_stale_temporaries(export_dir)
    temporary = make_temporary(export_dir)
    try:
        write(temporary)
        share_like(temporary, export_dir)
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
