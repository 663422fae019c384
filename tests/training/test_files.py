"""The run's JSON files: strict (no NaN), atomic, untouched when unchanged."""

import json
import math
import os

import pytest

from tfmeta.training import read_json, write_json


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = str(tmp_path / "results.json")
    write_json(path, {"mean": math.nan, "ci95": [math.inf, -math.inf, 0.5], "n": 3})

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    with open(path) as f:
        assert json.load(f, parse_constant=refuse) == {
            "mean": None,
            "ci95": [None, None, 0.5],
            "n": 3,
        }


def test_an_identical_write_leaves_the_file_untouched(tmp_path):
    path = str(tmp_path / "config.json")
    write_json(path, {"seed": 0})
    os.utime(path, ns=(1, 1))
    write_json(path, {"seed": 0})
    assert os.stat(path).st_mtime_ns == 1
    write_json(path, {"seed": 1})
    assert read_json(path) == {"seed": 1}
    assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left


def test_a_garbled_file_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"seed": ')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        read_json(str(tmp_path / "config.json"))
