"""The documentation: the site builds with --strict, every public name has a
docstring and a place in the API reference, every flag of a documented command
is a flag of its binary, and the README and build notes stay short."""

from __future__ import annotations

import ast
import concurrent.futures
import functools
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.binaries import help_flags, help_xml

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOC_FILES = [README, *sorted((REPO / "docs").rglob("*.md"))]
# The package and its public subpackages: each one's __all__ is its public names.
PUBLIC_MODULES = tuple(
    name
    for name in (
        "tfmeta",
        "tfmeta.algorithms",
        "tfmeta.configs",
        "tfmeta.core",
        "tfmeta.data",
        "tfmeta.models",
        "tfmeta.training",
        "tfmeta.export",
        "tfmeta.serving",
    )
    if REPO.joinpath(*name.split("."), "__init__.py").is_file()
)

# One worker builds the site and asks each binary for its flags once; the
# group is shared with the user's-path tests, so that xdist (which deals out
# the units of work with the most tests first) starts these long ones early.
pytestmark = pytest.mark.xdist_group("user_path")


# --- the site ---------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    """The site built by ``mkdocs build --strict`` from the repository's mkdocs.yml."""
    for module in (
        "mkdocs",
        "material",
        "mkdocstrings",
        "mkdocstrings_handlers.python",
    ):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]
        + ["--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
        check=False,
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        "mkdocs build --strict failed:\n" + result.stdout + result.stderr
    )
    return out


def test_the_site_builds_strictly_with_every_page(site):
    # --strict already failed on a broken link, a missing page or a page left
    # out of the navigation; every page of docs/ must also be in the site.
    for page in (REPO / "docs").rglob("*.md"):
        relative = page.relative_to(REPO / "docs").with_suffix("")
        if relative.name in ("index", "README"):
            built = site / relative.parent / "index.html"
        else:
            built = site / relative / "index.html"
        assert built.is_file(), f"{page.relative_to(REPO)} was not built ({built})"


def _all_of(module: str) -> list[str]:
    """A module's ``__all__``, read from its source (importing would load TensorFlow)."""
    path = REPO.joinpath(*module.split("."), "__init__.py")
    for node in reversed(ast.parse(path.read_text()).body):
        targets = (
            node.targets
            if isinstance(node, ast.Assign)
            else [getattr(node, "target", None)]
        )
        if any(getattr(target, "id", None) == "__all__" for target in targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{path.relative_to(REPO)} defines no __all__ list")


def _public_names() -> list[tuple[str, str]]:
    return [(module, name) for module in PUBLIC_MODULES for name in _all_of(module)]


@functools.cache
def _griffe_package():
    griffe = pytest.importorskip(
        "griffe", reason="griffe comes with mkdocstrings[python]"
    )
    return griffe.load(
        "tfmeta", search_paths=[str(REPO)], resolve_aliases=True, resolve_external=False
    )


def test_every_public_name_has_a_docstring():
    """What the API reference shows: griffe reads the source as mkdocstrings does
    (a constant's docstring is the string literal after it)."""
    package = _griffe_package()
    undocumented = []
    for module, name in _public_names():
        parent = package if module == "tfmeta" else package[module[len("tfmeta.") :]]
        obj = parent[name]
        if obj.is_alias:
            obj = obj.final_target
        if obj.docstring is None or not obj.docstring.value.strip():
            undocumented.append(f"{module}.{name} ({obj.relative_filepath})")
    assert not undocumented, "public names without a docstring:\n" + "\n".join(
        undocumented
    )


def test_every_public_name_is_in_the_api_reference(site):
    anchors = set()
    for page in (site / "api").rglob("*.html"):
        anchors.update(re.findall(r'id="([\w.]+)"', page.read_text()))
    missing = [
        f"{module}.{name}"
        for module, name in _public_names()
        if f"{module}.{name}" not in anchors
    ]
    assert not missing, (
        "public names missing from the API reference (docs/api/*.md, or no "
        "docstring to render):\n" + "\n".join(missing)
    )


# --- the commands of the documentation --------------------------------------

_BINARY = re.compile(
    r"python3? -m (?P<module>experiments(?:\.\w+)+)|(?<![\w./<-])tfmeta-(?P<script>[a-z][a-z0-9-]*)"
)
# Where a command's arguments end: a closing backtick, a shell operator, a comment.
_END = re.compile(r"`|&&|\|\||[;|&>)]|\s#")
_FLAG = re.compile(r"^--(?:\[no\])?([A-Za-z_]\w*)")


def _segments(text: str) -> list[str]:
    """The lines in which a command can be: fenced code with its line
    continuations joined, and prose with each inline code span on one line."""
    lines, fenced, block = [], False, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fenced:
                lines.extend(re.sub(r"\\\n\s*", " ", "\n".join(block)).splitlines())
                block = []
            fenced = not fenced
        elif fenced:
            block.append(line)
        else:
            lines.append(line)
    prose = "\n".join(lines)
    return re.sub(
        r"`[^`]+`", lambda m: m.group(0).replace("\n", " "), prose
    ).splitlines()


def commands_in(text: str) -> list[tuple[str, list[str]]]:
    """(module, flags) of each ``python -m experiments.<binary>`` and
    ``tfmeta-<binary>`` command in a Markdown text."""
    commands = []
    for line in _segments(text):
        matches = list(_BINARY.finditer(line))
        for i, match in enumerate(matches):
            module = match.group("module") or (
                "experiments." + match.group("script").replace("-", "_")
            )
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            arguments = line[match.end() : end]
            stop = _END.search(arguments)
            if stop:
                arguments = arguments[: stop.start()]
            flags = [
                found.group(1)
                for token in arguments.split()
                if (found := _FLAG.match(token))
            ]
            commands.append((module, flags))
    return commands


@functools.cache
def documented_commands() -> list[tuple[str, str, list[str]]]:
    """(file, module, flags) of each command in README.md and docs/."""
    return [
        (str(path.relative_to(REPO)), module, flags)
        for path in DOC_FILES
        for module, flags in commands_in(path.read_text())
    ]


def _binary_file(module: str) -> pathlib.Path:
    return REPO.joinpath(*module.split(".")).with_suffix(".py")


def _binary_flags(module: str) -> tuple[set[str], set[str]] | str:
    """(flags, boolean flags) of a binary, or why there are none.

    absl binaries list theirs with ``--helpxml`` (``tests.binaries``); a
    script that reads ``sys.argv`` itself compares its options as string
    literals.
    """
    path = _binary_file(module)
    if not path.is_file():
        return f"{module}: no such binary ({path.relative_to(REPO)} does not exist)"
    source = path.read_text()
    if "absl" not in source:
        return set(re.findall(r"[\"']--(\w+)", source)), set()
    root = help_flags(module)
    if root is None:
        return (
            f"{module} --helpxml printed no flags:\n{help_xml(module).stderr[-2000:]}"
        )
    flags, booleans = set(), set()
    for flag in root.iter("flag"):
        names = {flag.findtext("name"), flag.findtext("short_name")} - {None}
        flags |= names
        if flag.findtext("type") == "bool":
            booleans |= names
    return flags, booleans


@pytest.fixture(scope="module")
def binary_flags() -> dict:
    """Each documented binary's flags, asked once (two binaries at a time)."""
    modules = sorted({module for _, module, _ in documented_commands()})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(modules, pool.map(_binary_flags, modules)))


def _documented_binaries() -> list[str]:
    return sorted({module for _, module, _ in documented_commands()})


def test_the_docs_name_commands():
    modules = _documented_binaries()
    assert "experiments.train" in modules and "experiments.export" in modules, modules


@pytest.mark.parametrize("module", _documented_binaries())
def test_every_flag_of_a_documented_command_exists(module, binary_flags):
    known = binary_flags[module]
    assert not isinstance(known, str), known
    flags, booleans = known
    unknown = sorted(
        {
            f"{path}: --{flag}"
            for path, command, used in documented_commands()
            if command == module
            for flag in used
            if flag not in flags
            and not (flag.startswith("no") and flag[2:] in booleans)
        }
    )
    assert not unknown, f"flags that {module} does not define:\n" + "\n".join(unknown)


def test_every_documented_console_script_is_installed():
    binaries = re.search(r"BINARIES = \(([^)]*)\)", (REPO / "setup.py").read_text())
    installed = set(re.findall(r'"(\w+)"', binaries.group(1)))
    scripts = {
        match.group("script")
        for path in DOC_FILES
        for match in _BINARY.finditer(path.read_text())
        if match.group("script")
    }
    missing = sorted(s for s in scripts if s.replace("-", "_") not in installed)
    assert not missing, (
        f"console scripts the docs name but setup.py does not install: {missing}"
    )


def test_the_command_parser_reads_continuations_and_negated_flags():
    text = (
        "Run `python -m experiments.train\n--num_steps=5` or `tfmeta-train`.\n\n"
        "```bash\npython -m experiments.export --workdir=/w \\\n"
        "    --export_dir=/e --notransductive && tfmeta-serve-client --grpc # --no\n"
        "python -m experiments.embed --output_dir=/o > log  # --x\n```\n"
        "See `experiments/train.py` and python -m experiments.<name>.\n"
    )
    assert commands_in(text) == [
        ("experiments.train", ["num_steps"]),
        ("experiments.train", []),
        ("experiments.export", ["workdir", "export_dir", "notransductive"]),
        ("experiments.serve_client", ["grpc"]),
        ("experiments.embed", ["output_dir"]),
    ]


# --- length -------------------------------------------------------------------


def test_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= 250, f"README.md has {lines} lines"


def test_build_notes_are_at_most_500_lines():
    lines = len((REPO / "BUILD_NOTES.md").read_text().splitlines())
    assert lines <= 500, f"BUILD_NOTES.md has {lines} lines"


def test_the_readme_links_to_files_that_exist():
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text())
    relative = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in relative)
    missing = [t for t in relative if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
