"""The pictures command draws the sinusoid fits and the accuracy curves of
trained runs as PNG files, and refuses what it cannot draw in one line."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from tests.export import trained_exports
from tests.helpers import REPO

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def pictures(*flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.results.pictures", *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_sinusoid_fits_and_accuracy_curves_are_drawn(tmp_path_factory, tmp_path):
    exports = trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")
    runs = exports["maml"].workdir.parent
    done = pictures(
        f"--sinusoid_workdir={exports['sinusoid'].workdir}",
        f"--curves={runs}",
        f"--out_dir={tmp_path}",
        "--tasks=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fits, curves = tmp_path / "sinusoid_fits.png", tmp_path / "accuracy_curves.png"
    assert done.stdout.split() == [str(fits), str(curves)]
    width, height = png_size(fits)
    assert width > 2 * height > 500  # two tasks side by side
    assert png_size(curves)[0] > 500


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "give --sinusoid_workdir and/or --curves"),
        (["--curves=/nonexistent", "--steps=0"], "--steps must be 1 to 3 counts >= 1"),
        (["--curves=/nonexistent"], "--curves=/nonexistent: no classification run folder"),
    ],
)
def test_bad_requests_are_one_line(flags, message, tmp_path):
    done = pictures(*flags, f"--out_dir={tmp_path}")
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
