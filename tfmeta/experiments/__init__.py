"""The binaries and their configs, ``experiments/`` in the repository.

Installed from a wheel, ``tfmeta.experiments`` is that folder itself (setup.py
maps it here), and this file is not installed. Imported from a source tree
(the repository on ``sys.path``, or an editable install, which puts this
folder in front of setuptools' own mapping), this module stands in for the
package: it loads ``experiments/__init__.py`` as ``tfmeta.experiments`` with
``experiments/`` as its path, so ``tfmeta.experiments.train`` is the file
``experiments/train.py`` whichever way tfmeta was installed.
"""

import importlib.util
import pathlib
import sys

_SOURCE = pathlib.Path(__file__).resolve().parents[2] / "experiments"
if not (_SOURCE / "__init__.py").is_file():
    raise ImportError(
        f"tfmeta.experiments: expected the binaries in {_SOURCE}, beside the "
        f"tfmeta package of this source tree"
    )
_spec = importlib.util.spec_from_file_location(
    __name__, _SOURCE / "__init__.py", submodule_search_locations=[str(_SOURCE)]
)
_module = importlib.util.module_from_spec(_spec)
sys.modules[__name__] = _module  # the import returns this module, not the shim
_spec.loader.exec_module(_module)
