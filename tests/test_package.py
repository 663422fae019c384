"""The package: what its wheel installs, and its runtime defaults."""

import ast
import configparser
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO, fresh_python

# One worker computes the wheel (a module fixture) once: the module's
# tests share an xdist group.
pytestmark = pytest.mark.xdist_group("package")

# experiments/<name>.py and the console script it installs as.
BINARIES = {
    "train": "tfmeta-train",
    "evaluate": "tfmeta-evaluate",
    "export": "tfmeta-export",
    "embed": "tfmeta-embed",
    "benchmark": "tfmeta-benchmark",
    "serve_client": "tfmeta-serve-client",
    "serve_local": "tfmeta-serve-local",
    "write_episode": "tfmeta-write-episode",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel ``pip wheel`` builds from a copy of the sources (the build
    writes build/ and *.egg-info beside setup.py: not in the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tfmeta", "experiments"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        + ["--quiet", "-w", str(root / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (path,) = (root / "dist").glob("tfmeta-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_wheel_installs_each_binary_as_a_console_script(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(_dist_info(wheel, "entry_points.txt"))
    scripts = dict(entry_points["console_scripts"])
    assert scripts == {
        script: f"tfmeta.experiments.{module}:run"
        for module, script in BINARIES.items()
    }
    for module in BINARIES:  # each target exists: run() with no arguments
        tree = ast.parse(wheel.read(f"tfmeta/experiments/{module}.py"))
        (run,) = [
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name == "run"
        ]
        assert not run.args.args


def test_wheel_holds_the_configs_and_no_top_level_experiments(wheel):
    names = wheel.namelist()
    assert _dist_info(wheel, "top_level.txt").split() == ["tfmeta"]
    assert not [n for n in names if not n.startswith(("tfmeta/", "tfmeta-"))]
    configs = sorted(p.name for p in (REPO / "tfmeta" / "configs").glob("*.py"))
    assert "maml_omniglot.py" in configs
    packaged = sorted(
        n.rsplit("/", 1)[1] for n in names if n.startswith("tfmeta/configs/")
    )
    assert packaged == configs
    # tfmeta.experiments is experiments/ itself, not the source tree's stand-in
    assert (
        wheel.read("tfmeta/experiments/__init__.py")
        == (REPO / "experiments" / "__init__.py").read_bytes()
    )
    bench = sorted(p.name for p in (REPO / "experiments" / "bench").glob("*.py"))
    assert "driver.py" in bench
    assert {f"tfmeta/experiments/bench/{name}" for name in bench} <= set(names)
    kernels = (REPO / "tfmeta" / "models" / "kernels").glob("*.cc")
    assert {f"tfmeta/models/kernels/{k.name}" for k in kernels} <= set(names)
    # The research scripts (results drivers, surveys, profiling) stay in the
    # repository: a user's install holds the binaries and their configs only.
    assert (REPO / "experiments" / "results" / "equal_time.py").is_file()
    assert not [n for n in names if n.startswith("tfmeta/experiments/results/")]


def _from_source_tree(code: str, tmp_path, check: bool = True) -> str:
    """What ``code`` prints in a fresh interpreter outside the checkout, with
    the checkout on ``sys.path`` (as a legacy editable install puts it)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )
    return done.stdout


def test_source_tree_imports_experiments_as_tfmeta_experiments(tmp_path):
    code = (
        "import tfmeta.experiments.flags as flags\n"
        "print(flags.__file__)\n"
        "print(flags.get_config('maml', 'sinusoid')['inner_lr'])\n"
    )
    path, inner_lr = _from_source_tree(code, tmp_path).split()
    assert path == str(REPO / "experiments" / "flags.py")
    assert float(inner_lr) == 0.01  # Finn et al. 2017, sinusoid alpha


def test_console_script_help_lists_the_binary_and_its_flags(tmp_path):
    # A console script's __main__ is a generated wrapper with no docstring and
    # no flags: run() gives it the binary's, as `python -m` shows them.
    code = (
        "import sys\n"
        "sys.argv = ['tfmeta-train', '--helpshort']\n"
        "from tfmeta.experiments.train import run\n"
        "run()\n"
    )
    help_text = _from_source_tree(code, tmp_path, check=False)  # absl exits 1
    assert help_text.startswith("Meta-trains a learner")
    assert "tfmeta-train:\n  --cpu_replicas" in help_text
    assert "--strategy: <default|mirrored|multi_worker>" in help_text


def test_importing_tfmeta_changes_nothing_in_the_process():
    # No TensorFlow, no environment variable; after TensorFlow and every
    # public name, still no variable of tfmeta's and TensorFlow's thread pools.
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import tfmeta, tfmeta.runtime\n"
        "print('tensorflow' in sys.modules, os.environ == before)\n"
        "import keras, tensorflow as tf, tensorflow_datasets\n"
        "loaded = dict(os.environ)\n"
        "[getattr(tfmeta, name) for name in tfmeta.__all__]\n"
        "import tfmeta.export, tfmeta.serving\n"
        "print(os.environ == loaded, 'TF_ENABLE_ONEDNN_OPTS' in os.environ)\n"
        "t = tf.config.threading\n"
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())\n"
    )
    assert fresh_python(code) == ["False", "True", "True", "False", "0", "0"]


def test_benchmark_driver_does_not_load_tensorflow():
    # A child's peak RSS (ru_maxrss) starts from its parent's at exec, so the
    # driver that spawns the timed workers and the yardstick must stay small.
    code = (
        "import os, sys, experiments.benchmark, experiments.bench.driver; "
        "print('tensorflow' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    )
    assert fresh_python(code) == ["False", "1"]
