"""The evaluation and export binaries: a bad workdir or flag is refused before
data or models load."""

import os
import subprocess
import sys

import pytest

from experiments.configs import get_config
from tests.helpers import REPO
from tfmeta.training import write_json


def run_binary(binary, *args):
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{binary}", *args],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("binary", ["evaluate", "export"])
@pytest.mark.parametrize(
    "case,message",
    [
        ("no-config", "no config.json in workdir"),
        ("no-checkpoint", "has this run saved one yet?"),
        ("bad-checkpoint-flag", "value should be one of <best|latest>"),
    ],
)
def test_bad_workdir_or_flag_is_a_usage_error(tmp_path, binary, case, message):
    workdir = tmp_path / "run"
    workdir.mkdir()
    args = [f"--workdir={workdir}"]
    if binary == "export":
        args.append(f"--export_dir={tmp_path / 'models' / 'maml'}")
    if case != "no-config":
        # A data folder that does not exist: loading it would fail differently.
        config = get_config("maml", "omniglot")
        config["data_dir"] = str(tmp_path / "absent")
        write_json(str(workdir / "config.json"), config)
    if case == "bad-checkpoint-flag":
        args.append("--checkpoint=bogus")
    result = run_binary(binary, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "absent") not in result.stderr
    assert not (workdir / "results.json").exists()
    assert not (tmp_path / "models").exists()
