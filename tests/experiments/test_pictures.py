"""The pictures command draws the sinusoid fits and the accuracy curves of
trained runs as PNG files, and refuses what it cannot draw in one line."""

from __future__ import annotations

import json
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
        (
            ["--curves=/nonexistent"],
            "--curves=/nonexistent: no classification run folder",
        ),
    ],
)
def test_bad_requests_are_one_line(flags, message, tmp_path):
    done = pictures(*flags, f"--out_dir={tmp_path}")
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


def test_curve_panels_group_runs_by_the_tasks_they_were_tested_on(tmp_path):
    from experiments.results.pictures import curve_panels

    def run(path, **config):
        folder = tmp_path / path
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "validation.json").write_text("[]")

    chars = {"dataset": "omniglot", "split_protocol": "random"}
    run("a/5w1s/maml_seed0", n_way=5, k_shot=1, **chars)
    run("a/5w1s/.pilot/maml_seed0", n_way=5, k_shot=1, **chars)
    run("a/5w1s/maml_seed1", n_way=5, k_shot=1, **chars)
    run(
        "a/alphabet/protonet",
        n_way=20,
        k_shot=1,
        dataset="omniglot",
        split_protocol="alphabet",
    )
    run("a/sine", n_way=1, k_shot=5, dataset="sinusoid")
    run("b/nc_5w1s", n_way=5, k_shot=1, **chars)
    run("b/nc_20w1s", n_way=20, k_shot=1, **chars)
    panels = curve_panels([str(tmp_path / "a"), str(tmp_path / "b")])
    labels = {title: [label for label, _ in runs] for title, runs in panels.items()}
    assert labels == {
        "5-way 1-shot, held-out characters": [
            "5w1s/maml",
            "5w1s/maml_seed1",
            "nc_5w1s",
        ],
        "20-way 1-shot, held-out characters": ["nc_20w1s"],
        "20-way 1-shot, within one held-out alphabet": ["alphabet/protonet"],
    }
