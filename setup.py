"""tfmeta: gradient-based meta-learning for TensorFlow 2 and Keras 3."""

import pathlib

from setuptools import find_packages, setup

# experiments/<name>.py, each installed as the console script tfmeta-<name>.
BINARIES = (
    "train",
    "evaluate",
    "export",
    "embed",
    "benchmark",
    "serve_client",
    "serve_local",
    "write_episode",
)

setup(
    name="tfmeta",
    version="0.1.0",
    description="Gradient-based meta-learning (MAML, FOMAML, Reptile) for TensorFlow 2 / Keras 3",
    long_description=(pathlib.Path(__file__).parent / "README.md").read_text(),
    long_description_content_type="text/markdown",
    # The binaries and their configs (experiments/ in the repository) install
    # as tfmeta.experiments: no top-level package of that name in site-packages.
    # (tfmeta/experiments/__init__.py stands in for them in a source tree.)
    packages=find_packages(
        include=["tfmeta", "tfmeta.*"], exclude=["tfmeta.experiments"]
    )
    + ["tfmeta.experiments", "tfmeta.experiments.bench"],
    package_dir={"tfmeta.experiments": "experiments"},
    # Native sources, compiled where they run: the kernel on first use
    # (tfmeta.models.kernels), the benchmark's FMA loop (experiments/bench/roof.py).
    package_data={
        "tfmeta.models.kernels": ["*.cc", "*.h"],
        "tfmeta.experiments.bench": ["*.cc"],
    },
    entry_points={
        "console_scripts": [
            f"tfmeta-{name.replace('_', '-')}=tfmeta.experiments.{name}:run"
            for name in BINARIES
        ]
    },
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",  # 2.16 is the first release with Keras 3
        "keras>=3.0",
        "tensorflow-datasets>=4.9",
        "tensorboard",  # tf.summary needs it; tensorflow 2.21 does not install it
        "importlib_resources",  # tensorflow-datasets needs it to download, without declaring it
        "absl-py>=1.0",
        "numpy>=1.23",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "pytest-randomly>=3.15",  # every run in a shuffled order (its seed printed)
            "matplotlib>=3.5",
        ],
        "pictures": ["matplotlib>=3.5"],
        # each tensorflow-serving-api X.Y requires tensorflow>=X.Y: keep the same bound
        "serving": ["tensorflow-serving-api>=2.16,<2.22"],
        # the documentation site: mkdocs build --strict (tests/test_docs.py builds it)
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26"],
    },
)
