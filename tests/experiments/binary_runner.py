"""Runs a binary's main on command lines as its console script does (flags
parsed by ``experiments._parse_flags``, an ``InputError`` printed as one line
by ``experiments._one_line_errors``), in this process.

  python -m tests.experiments.binary_runner <binary> '<JSON list of argv lists>'

prints a JSON list of ``{"code", "stderr"}``: ``code`` is the exit status,
"usage" for an ``app.UsageError`` (absl prints the usage text with it) or
"traceback" for any other exception (its traceback in ``stderr``). A fresh
process is needed for export and embed, whose flags clash with those of
train and evaluate.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import traceback

_DEFINED: set[str] = set()  # binaries whose flags this process has defined


def run(binary: str, argv: list[str]) -> dict:
    from absl import app, flags

    import experiments

    module = importlib.import_module(f"experiments.{binary}")
    if hasattr(module, "define_flags") and binary not in _DEFINED:
        module.define_flags()
        _DEFINED.add(binary)
    flags.FLAGS.unparse_flags()
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            args = experiments._parse_flags([binary, *argv])
            experiments._one_line_errors(module.main)(args)
        except SystemExit as stopped:
            code = stopped.code
        except app.UsageError as error:
            code = "usage"
            print(error, file=sys.stderr)
        except Exception:  # noqa: BLE001 (the binary would end with a traceback: record it)
            code = "traceback"
            traceback.print_exc()
    flags.FLAGS.unparse_flags()
    return {"code": code, "stderr": stderr.getvalue()}


def main() -> None:
    binary, cases = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps([run(binary, argv) for argv in cases]))


if __name__ == "__main__":
    main()
