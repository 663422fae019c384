"""The README's commands, read from README.md itself and run in its order
(main job, export, an episode, a served request, the library quickstart),
then the scripts of docs/examples.md, with only the step counts and the
main job's meta-evaluation tasks made few, so neither can drift from the
code.

A ```bash block whose first line is ``# needs <what>`` needs what no test
machine has (TF Serving's model server, several hosts, a GPU) and is
skipped by that name; every other block runs. Paths under ``/tmp/`` move to
the test's own folder, and the ports 8500/8501 to free ones where they are
taken.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO, omniglot_dir

README = REPO / "README.md"
EXAMPLES = REPO / "docs" / "examples.md"  # run after the README, whose files they read
NEEDS = "# needs "
# The README's installs (the test command has installed every extra already).
INSTALL = re.compile(r"^pip install -e (\.|'\.\[[\w,]+\]')( && |$)")
SHRINK = (
    (re.compile(r"\bnum_steps=\d+"), "num_steps=2"),  # a flag or a keyword
    # The main job meta-validates on 200 tasks and meta-tests on 600 (its
    # config): 4 of each run the same code.
    (re.compile(r"(-m experiments\.train)\b"), r"\1 --val_tasks=4 --test_tasks=4"),
    (re.compile(r"--test_tasks=[1-9]\d*"), "--test_tasks=4"),
    (re.compile(r"--eval_every=\d+"), "--eval_every=1"),
    (re.compile(r"--checkpoint_every=\d+"), "--checkpoint_every=1"),
    (re.compile(r"\.take\(\d+\)"), ".take(2)"),
    (re.compile(r"\bsteps_per_epoch=\d+"), "steps_per_epoch=2"),
    (re.compile(r"\bval_tasks=[1-9]\d*"), "val_tasks=4"),
    (re.compile(r"\brange\(\d+\)"), "range(2)"),
)


def readme_blocks(path=README) -> list[tuple[str, str]]:
    """(language, text) of every fenced ```bash and ```python block of
    ``path`` (README.md), in order."""
    text = path.read_text()
    return [
        (m[1], m[2])
        for m in re.finditer(r"^```(\w+)\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
        if m[1] in ("bash", "python")
    ]


def bash_commands(text: str) -> list[str]:
    """The block's commands: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _fewer_tasks(call: re.Match) -> str:
    """A script's ``tfmeta.get_config(...)`` with 4 validation and test tasks,
    as the main job's command gets (a key the call sets is kept)."""
    arguments = call[1]
    for key in ("val_tasks", "test_tasks"):
        if f"{key}=" not in arguments:
            arguments += f", {key}=4"
    return f"tfmeta.get_config({arguments})"


def shrink(command: str) -> str:
    for pattern, small in SHRINK:
        command = pattern.sub(small, command)
    return re.sub(r"tfmeta\.get_config\(([^()]*)\)", _fewer_tasks, command)


def test_every_block_runs_or_says_what_it_needs():
    """What the runner below will do with each block: the tests' command is
    CI's, the install is an editable one, a skipped block names its need."""
    blocks = readme_blocks()
    assert blocks, "README.md has no command"
    ci = (REPO / ".ci" / "run").read_text()
    installs = []
    for language, text in blocks:
        if language != "bash":
            continue
        first = text.strip().splitlines()[0]
        if first.startswith(NEEDS):
            assert len(first) > len(NEEDS) + 5, first
            continue
        for command in bash_commands(text):
            if "python -m pytest" in command:
                assert command in ci, (command, ci)  # the README's test command is CI's
            elif command.startswith("pip "):
                assert INSTALL.match(command), command
                installs.append(command)
            else:
                assert command.startswith(("python -m experiments.", "curl ")), command
    assert installs, "the README's set-up command installs and runs the main job"


def image_folder(omniglot: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """An image folder (train/, val/, test/, a folder of PNGs per class) of the
    136 real Omniglot characters of images_background_small1, 100, 20 and 16,
    as docs/examples.md's IMAGE_FOLDER."""
    with zipfile.ZipFile(omniglot / "images_background_small1.zip") as archive:
        by_character: dict[str, list[str]] = {}
        for name in sorted(archive.namelist()):
            if name.endswith(".png"):
                by_character.setdefault(name.rsplit("/", 1)[0], []).append(name)
        characters = sorted(by_character)
        for index, character in enumerate(characters):
            split = "train" if index < 100 else "val" if index < 120 else "test"
            folder = root / split / character.replace("/", "_")
            folder.mkdir(parents=True)
            for name in by_character[character]:
                (folder / name.rsplit("/", 1)[1]).write_bytes(archive.read(name))
    return root


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.xdist_group("user_path")  # started early, with the docs tests
def test_the_readme_runs_in_its_order(tmp_path):
    """Set-up (its main job), export, an episode, serve_local with REST and
    gRPC requests, the library quickstart: each exits 0, the requests answer
    one line per query."""
    data = omniglot_dir()  # skips, saying why, where the real archives are absent
    env = {
        **os.environ,
        "TFMETA_OMNIGLOT_DIR": str(data),
        "IMAGE_FOLDER": str(image_folder(data, tmp_path / "images")),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    moved = {"/tmp/": f"{tmp_path}/"}
    for port in ("8500", "8501"):
        if not _port_free(int(port)):
            moved[port] = str(_free_port())
    background, ran, skipped = [], [], []

    def run(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            args,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def place(command: str) -> str:
        for old, new in moved.items():
            command = command.replace(old, new)
        return shrink(command)

    try:
        for language, text in readme_blocks() + readme_blocks(EXAMPLES):
            if language == "python":
                done = run([sys.executable, "-c", place(text)])
                assert done.returncode == 0, ("python block", done.stderr[-3000:])
                ran.append("python block")
                continue
            first = text.strip().splitlines()[0]
            if first.startswith(NEEDS):
                skipped.append(first)
                continue
            for command in bash_commands(text):
                if "python -m pytest" in command:
                    continue  # the command running this test
                command = INSTALL.sub("", place(command))
                if not command:
                    continue  # an install alone
                if command.endswith("&"):
                    background.append(
                        subprocess.Popen(
                            ["bash", "-c", command.rstrip("& ")],
                            cwd=REPO,
                            env=env,
                            # Not pipes: one nobody reads blocks the server
                            # once its log fills it.
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            start_new_session=True,
                        )
                    )
                    continue
                done = run(["bash", "-c", command])
                assert done.returncode == 0, (command, done.stderr[-3000:])
                if "experiments.serve_client" in command:
                    lines = done.stdout.strip().splitlines()
                    query_dir = re.search(r"--query_dir=(\S+)", command)[1]
                    queries = os.listdir(query_dir)
                    assert lines[0].split()[:2] == ["query", "class"], done.stdout
                    assert len(lines) == 1 + len(queries), done.stdout
                ran.append(
                    command.split()[2] if command.startswith("python") else command
                )
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    assert "experiments.train" in ran and "experiments.export" in ran, ran
    assert ran.count("experiments.serve_client") >= 2, ran
    python_blocks = [
        b for b in readme_blocks() + readme_blocks(EXAMPLES) if b[0] == "python"
    ]
    assert ran.count("python block") == len(python_blocks) >= 3, ran
    assert all(reason.startswith(NEEDS) for reason in skipped)
