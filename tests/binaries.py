"""What the binaries print about themselves, asked once per test process."""

from __future__ import annotations

import functools
import pathlib
import subprocess
import sys
from xml.etree import ElementTree

REPO = pathlib.Path(__file__).resolve().parents[1]


@functools.cache
def help_xml(module: str) -> subprocess.CompletedProcess:
    """``python -m <module> --helpxml`` in a fresh process at the repository
    root, run once per test process: the docs' flag check and the user's-path
    help check (one xdist group, so one worker) read the same output."""
    return subprocess.run(
        [sys.executable, "-m", module, "--helpxml"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def help_flags(module: str) -> ElementTree.Element | None:
    """The ``<AllFlags>`` element of ``help_xml(module)``, or None where it
    printed none."""
    stdout = help_xml(module).stdout
    start = stdout.find("<?xml")
    return None if start < 0 else ElementTree.fromstring(stdout[start:])
