"""Peak memory as a process's own high-water mark, and the wrapper that gives
a PyTorch yardstick's (or ``import torch``'s) that figure.

``peak_rss_mib()`` reads ``VmHWM`` from ``/proc/self/status``: the largest
resident set of this process since it started. ``ru_maxrss`` is not that on
Linux: the kernel carries a parent's high-water mark through fork and exec,
so a small child of a large parent reports the parent's size. Where /proc is
absent it falls back to ``ru_maxrss``, and ``peak_rss_source()`` says so.

Run as a script, it runs another Python script in this same interpreter and
then prints that script's JSON lines with ``peak_rss_mib`` replaced by this
process's own peak (the script's figure kept as ``ru_maxrss_mib``), or
imports a module and prints the peak of that alone::

  python experiments/bench/memory.py SCRIPT [ARG...]
  python experiments/bench/memory.py --import torch

It imports nothing but the standard library, so any interpreter runs it (the
yardstick's has PyTorch and not tfmeta).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import resource
import runpy
import sys
from typing import Any

STATUS = "/proc/self/status"


def peak_rss_source() -> str:
    """Where the peak comes from: VmHWM where /proc gives it, else ru_maxrss."""
    return "VmHWM" if os.path.isfile(STATUS) else "ru_maxrss"


def describe_peak_source() -> str:
    """What the peak RSS figures are, in a line."""
    if peak_rss_source() == "VmHWM":
        return "peak RSS: each process's own high-water mark (VmHWM, /proc/self/status)"
    return (
        f"peak RSS: ru_maxrss ({STATUS} is absent), which may start from the "
        "parent's peak"
    )


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB (see the module doc)."""
    if peak_rss_source() == "VmHWM":
        with open(STATUS) as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    maximum = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maximum / 2**20 if sys.platform == "darwin" else maximum / 1024  # KiB


def with_own_peak(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with this process's peak RSS; its own as ``ru_maxrss_mib``."""
    result = dict(result)
    if "peak_rss_mib" in result:
        result["ru_maxrss_mib"] = result["peak_rss_mib"]
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    result["peak_rss_source"] = peak_rss_source()
    return result


def run_script(script: str, args: list[str]) -> None:
    """Runs ``script`` as ``__main__`` with ``args``, as ``python SCRIPT ARGS``
    would, then prints what it printed, its JSON lines ``with_own_peak``."""
    sys.argv = [script, *args]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_path(script, run_name="__main__")
    finally:
        for line in printed.getvalue().splitlines():
            if line.startswith("{"):
                line = json.dumps(with_own_peak(json.loads(line)))
            print(line, flush=True)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--import":
        del sys.path[0]  # this folder: its modules are not the import's
        importlib.import_module(argv[2])
        print(json.dumps(with_own_peak({"import": argv[2]})), flush=True)
    elif len(argv) >= 2 and not argv[1].startswith("-"):
        run_script(argv[1], argv[2:])
    else:
        sys.exit(f"usage: {argv[0]} SCRIPT [ARG...] | --import MODULE")


if __name__ == "__main__":
    main(sys.argv)
