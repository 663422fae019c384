"""Version folders: never nested in a version, readable like their model folder,
no temporary folder outliving its export."""

from __future__ import annotations

import os
import pathlib
import stat
import subprocess
import sys
import time

import pytest

from experiments.export import export_workdir
from tests.export import run_export_binary, trained_exports
from tfmeta.export import LayoutError, layout, write_version

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")


def _write_tree(folder: str) -> None:
    """A SavedModel's shape: files at the top and in sub-folders."""
    os.makedirs(os.path.join(folder, "variables"))
    for name in ("saved_model.pb", os.path.join("variables", "variables.index")):
        with open(os.path.join(folder, name), "w") as f:
            f.write("x")


def _modes(folder: pathlib.Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): stat.S_IMODE(path.stat().st_mode)
        for path in [folder, *folder.rglob("*")]
    }


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")


@pytest.fixture
def umask():
    """Sets the process's umask for one test (restored after it)."""
    previous = os.umask(0o022)
    yield os.umask
    os.umask(previous)


def test_a_version_folder_or_anything_inside_one_is_refused(tmp_path):
    model = tmp_path / "models" / "m"
    write_version(str(model), _write_tree)
    cases = {
        model / "1": "is a SavedModel (a model version): give the model's folder, e.g. "
        + str(model),
        model / "1" / "variables": f"is inside {model / '1'}, which is a SavedModel",
        model / "1" / "new": f"is inside {model / '1'}, which is a SavedModel",
        model
        / "2": f"is named like a version: TF Serving would take it for version 2 of {model}",
        tmp_path / "models" / "7": "is named like a version",
    }
    (tmp_path / "models" / "models.config").write_text("model_config_list {}\n")
    cases[tmp_path / "models"] = (
        "holds models.config, so it is the folder of all models"
    )
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    for export_dir, message in cases.items():
        with pytest.raises(LayoutError) as error:
            write_version(str(export_dir), _write_tree)
        assert str(error.value).startswith(f"export_dir {export_dir} ")
        assert message in str(error.value) and "\n" not in str(error.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert write_version(str(model), _write_tree)[0] == 2


def test_exporting_into_a_served_version_is_refused_before_any_work(exports, tmp_path):
    exported = exports["sinusoid"]
    with pytest.raises(
        LayoutError, match=f"export_dir {exported.path} is a SavedModel"
    ):
        export_workdir(str(exported.workdir), str(exported.path))
    listing = sorted(os.listdir(exported.path))
    assert "saved_model.pb" in listing and "1" not in listing
    assert not (exported.export_dir / "models.config").exists()
    # The binary: one line naming the path, no traceback, nothing written.
    done = run_export_binary(
        f"--workdir={exported.workdir}", f"--export_dir={exported.path}"
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [l for l in done.stderr.splitlines() if "export.py: error:" in l]
    assert len(lines) == 1, done.stderr  # one line, no usage text
    line = lines[0]
    assert line.startswith(
        f"export.py: error: export_dir {exported.path} is a SavedModel"
    )
    assert line.endswith("(--export_dir)")
    assert sorted(os.listdir(exported.path)) == listing
    assert not (exported.export_dir / "models.config").exists()


@pytest.mark.parametrize(
    "model_mode, folder_mode, file_mode",
    [(0o755, 0o755, 0o644), (0o750, 0o750, 0o640), (0o700, 0o700, 0o600)],
)
def test_a_version_is_as_readable_as_its_model_folder_whatever_the_umask(
    tmp_path, umask, model_mode, folder_mode, file_mode
):
    model = tmp_path / "m"
    model.mkdir()
    model.chmod(model_mode)
    for mask in (0o077, 0o002):  # private, group-writable: neither decides
        umask(mask)
        _, path = write_version(str(model), _write_tree)
        modes = _modes(pathlib.Path(path))
        assert modes == {
            ".": folder_mode,
            "variables": folder_mode,
            "saved_model.pb": file_mode,
            "variables/variables.index": file_mode,
        }, (oct(mask), {k: oct(v) for k, v in modes.items()})


def test_an_export_is_readable_where_its_model_folder_is(exports):
    # The session's exports, SavedModels written by TensorFlow.
    for name in ("maml", "leo"):
        exported = exports[name]
        readable = stat.S_IMODE(exported.export_dir.stat().st_mode) & 0o055
        modes = _modes(exported.path)
        assert len(modes) > 5
        for relative, mode in modes.items():
            if (exported.path / relative).is_dir():
                assert mode == 0o700 | readable, (name, relative, oct(mode))
            else:
                assert mode == 0o600 | (readable & 0o044), (name, relative, oct(mode))


def _temporary(model: pathlib.Path, pid: int | None = None, host: str | None = None):
    """A temporary folder as an export names it, for another process or host."""
    path = pathlib.Path(layout.make_temporary(str(model)))
    name = path.name
    prefix, random = name.rsplit("-", 1)
    own_host, own_pid = prefix[len(layout.TEMPORARY_PREFIX) :].rsplit("-", 1)
    name = f"{layout.TEMPORARY_PREFIX}{host or own_host}-{pid or own_pid}-{random}"
    path = path.rename(model / name)
    (path / "variables").mkdir()
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"theta")
    return path


def test_temporary_folders_of_dead_exports_are_removed_and_live_ones_spared(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        day_ago = time.time() - layout.STALE_AFTER_SECONDS - 60
        removed = {
            "dead process": _temporary(model, pid=dead.pid),
            "old, another host": _temporary(model, host="elsewhere"),
            "old, no process id": model / f"{layout.TEMPORARY_PREFIX}k2j3h4_x",
        }
        removed["old, no process id"].mkdir()
        spared = {
            "this process": _temporary(model),
            "another live process": _temporary(model, pid=writer.pid),
            "recent, another host": _temporary(model, host="elsewhere"),
            "recent, no process id": model / f"{layout.TEMPORARY_PREFIX}abc",
        }
        spared["recent, no process id"].mkdir()
        for path in (removed["old, another host"], removed["old, no process id"]):
            os.utime(path, (day_ago, day_ago))
        (model / "notes.txt").write_text("kept")
        version, _ = write_version(str(model), _write_tree)
        assert version == 1
        left = {path.name for path in model.iterdir()}
        assert left == {
            "1",
            "notes.txt",
            *(path.name for path in spared.values()),
        }, sorted(left - {p.name for p in spared.values()})
        writer.kill()
        writer.wait()
        # The next export finds the writer gone: its folder goes too.
        write_version(str(model), _write_tree)
        assert not spared["another live process"].exists()
        assert spared["this process"].exists()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
