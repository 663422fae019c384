"""Writes ``tests/golden/values.json``: the golden values of every case in
``tests/golden/cases.py``.

The stored values were written by the code before the core restructuring
(commit cca08e3, "Build notes: test suite time"), on the CPU, with tfmeta's
defaults (oneDNN kernels, the native batch-norm kernel). They are the
reference that the restructured code must reproduce
(``tests/golden/test_golden.py``): float32 parameters to float32 round-off,
float64 meta-gradients to 1e-10. Do not regenerate them to make a test pass:
a difference is a change of behaviour to explain, not a value to update.
They are written (only ever by the code before the restructuring, e.g. to
add a case there) from the repository root with

    PYTHONPATH=. python -m tests.golden.generate --overwrite [CASE ...]

``PYTHONPATH=.`` makes the checkout's tfmeta the one imported; with case
names, only those cases are rewritten and the others are kept.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import zlib

import numpy as np

PATH = pathlib.Path(__file__).with_name("values.json")
SOURCE_COMMIT = "cca08e3"


def _short32(value: float) -> float:
    """The shortest decimal that gives back the same float32."""
    return float(str(np.float32(value)))


def to_float32_json(values):
    """Nested lists of float32 values, each as its shortest decimal."""
    array = np.asarray(values, np.float64)
    if array.ndim == 0:
        return _short32(float(array))
    return [to_float32_json(v) for v in array]


def to_float64_json(values):
    array = np.asarray(values, np.float64)
    return array.tolist()  # Python floats: json writes repr, 17 significant digits


def _outputs(steps_or_eval, convert):
    if isinstance(steps_or_eval, list):
        return [_outputs(s, convert) for s in steps_or_eval]
    return {key: convert(value) for key, value in sorted(steps_or_eval.items())}


def generate(names: list[str] | None = None) -> dict:
    import tensorflow as tf

    import tfmeta
    from tests.golden import cases

    selected = names or list(cases.CASES)
    out = {
        "about": (
            "Golden values written by tests/golden/generate.py from the code before "
            f"the core restructuring (commit {SOURCE_COMMIT}); do not regenerate "
            "to make a test pass."
        ),
        "source_commit": SOURCE_COMMIT,
        "environment": {
            "tensorflow": tf.__version__,
            "keras": __import__("keras").__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "onednn": tfmeta.onednn_enabled(),
        },
        "train_steps": cases.TRAIN_STEPS,
        "gradient_steps": cases.GRADIENT_STEPS,
        "gradient_lr": cases.GRADIENT_LR,
        "cases": {},
    }
    for name in selected:
        case = cases.CASES[name]
        print(f"{name}: {case.description}", file=sys.stderr)
        probe = case.build("float64", "gradient")
        variable_names = probe.parameter_names()
        shapes = probe.parameter_shapes()
        initial = cases.initial_parameters(
            variable_names, shapes, seed=zlib.crc32(name.encode())
        )
        single = cases.float32_run(case, initial)
        double = cases.float64_run(case, initial)
        out["cases"][name] = {
            "description": case.description,
            "variables": [
                {"name": n, "shape": list(s)} for n, s in zip(variable_names, shapes)
            ],
            "initial": [to_float64_json(v) for v in initial],
            "float32": {
                "steps": _outputs(single["steps"], to_float32_json),
                "parameters": [to_float32_json(v) for v in single["parameters"]],
                "eval": _outputs(single["eval"], to_float32_json),
            },
            "float64": {
                "meta_gradients": [
                    [to_float64_json(g) for g in step]
                    for step in double["meta_gradients"]
                ],
                "steps": _outputs(double["steps"], to_float64_json),
                "eval": _outputs(double["eval"], to_float64_json),
            },
        }
    return out


def dumps(values: dict) -> str:
    """JSON with one line per top-level entry and per case."""
    compact = {"separators": (",", ":")}
    lines = []
    for key, value in values.items():
        if key == "cases":
            inner = [
                f"  {json.dumps(name)}:{json.dumps(case, **compact)}"
                for name, case in value.items()
            ]
            lines.append('"cases":{\n' + ",\n".join(inner) + "\n}")
        else:
            lines.append(f"{json.dumps(key)}:{json.dumps(value, **compact)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--overwrite", action="store_true", help="replace values.json")
    parser.add_argument("--output", type=pathlib.Path, default=PATH)
    parser.add_argument("cases", nargs="*", help="only these cases (default: all)")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.overwrite:
        parser.error(
            f"{args.output} exists: the golden values are not regenerated lightly (--overwrite)"
        )
    values = generate(args.cases)
    if args.cases and args.output.exists():
        kept = json.loads(args.output.read_text())
        kept["cases"].update(values["cases"])
        values = {**values, "cases": kept["cases"]}
    args.output.write_text(dumps(values))
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
