"""Each test leaves the process as it found it.

A pytest worker runs many tests in one process, in an order that depends on
``-n``, ``--dist`` and the shuffle of pytest-randomly; a test that leaves
process-wide state behind changes what its neighbours compute. So around
every test (its fixtures' setup and teardown included) this checks the state
a test can change and restore, and puts it back:

* environment variables, the current directory and the umask;
* Keras' float type and dtype policy, tfmeta.runtime's switches (the native
  kernels, the oneDNN value it wrote) and whether absl's flags are parsed.

A change to any of them fails the test that made it (use ``monkeypatch``, or
restore it in the test). TensorFlow's global seed and Keras' global seed and
seed generator are put back silently (pytest-randomly resets ``random`` and
``numpy.random`` before each test): code under test may set them
(``keras.utils.set_random_seed`` in experiments.embed) and no test may
depend on them.
"""

from __future__ import annotations

import os
import sys

import pytest

from tfmeta import runtime

# The native kernels' fixtures (``library``, ``form``), for every test module.
pytest_plugins = ["tests.native"]

_CHECKED = "_tfmeta_process_state"
_SEEDS = "_tfmeta_random_seeds"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _flags_parsed() -> bool | None:
    if "absl.flags" not in sys.modules:
        return None
    return sys.modules["absl.flags"].FLAGS.is_parsed()


def _keras_dtypes() -> tuple[str, str] | None:
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.config.floatx(), keras.config.dtype_policy().name


def _state() -> dict:
    return {
        "os.environ": dict(os.environ),
        "current directory": os.getcwd(),
        "umask": _umask(),
        "keras floatx and dtype policy": _keras_dtypes(),
        "tfmeta.runtime native kernels switch": runtime._native_kernels[0],
        "tfmeta.runtime oneDNN value written": runtime._onednn_written[0],
        "absl flags parsed": _flags_parsed(),
    }


def _restore(state: dict) -> None:
    os.environ.clear()
    os.environ.update(state["os.environ"])
    os.chdir(state["current directory"])
    os.umask(state["umask"])
    dtypes = state["keras floatx and dtype policy"]
    if dtypes is not None:
        import keras

        keras.config.set_floatx(dtypes[0])
        keras.config.set_dtype_policy(dtypes[1])
    runtime._native_kernels[0] = state["tfmeta.runtime native kernels switch"]
    runtime._onednn_written[0] = state["tfmeta.runtime oneDNN value written"]
    if state["absl flags parsed"] is False and _flags_parsed():
        sys.modules["absl.flags"].FLAGS.unparse_flags()


def _differences(before: dict, after: dict) -> list[str]:
    changed = []
    for name, value in before.items():
        if name == "os.environ":
            keys = sorted(set(value) | set(after[name]))
            for key in keys:
                if value.get(key) != after[name].get(key):
                    changed.append(
                        f"os.environ[{key!r}]: {value.get(key)!r} -> "
                        f"{after[name].get(key)!r}"
                    )
        elif value is not None and value != after[name]:
            changed.append(f"{name}: {value!r} -> {after[name]!r}")
    return changed


def _seeds():
    if "tensorflow" not in sys.modules:
        return None
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils
    from tensorflow.python.eager import context

    return {
        "tensorflow": context.global_seed(),
        "keras": {
            name: global_state.get_global_attribute(name)
            for name in (
                rng_utils.GLOBAL_RANDOM_SEED,
                seed_generator.GLOBAL_SEED_GENERATOR,
            )
        },
    }


def _restore_seeds(seeds) -> None:
    if seeds is None or _seeds() == seeds:
        return
    from keras.src.backend.common import global_state
    from tensorflow.python.eager import context

    context.set_global_seed(seeds["tensorflow"])
    for name, value in seeds["keras"].items():
        global_state.set_global_attribute(name, value)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    # Before any fixture of the test is set up.
    setattr(item, _CHECKED, _state())
    setattr(item, _SEEDS, _seeds())
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    # After the fixtures that end with this test are torn down; an error
    # raised here is reported as this test's teardown error.
    before = getattr(item, _CHECKED, None)
    if before is not None:
        _restore_seeds(getattr(item, _SEEDS))
        after = _state()
        _restore(before)
        changed = _differences(before, after)
        if changed:
            pytest.fail(
                f"{item.nodeid} left process-wide state changed (restored now; "
                "use monkeypatch or restore it in the test): " + "; ".join(changed),
                pytrace=False,
            )
    return result


def pytest_terminal_summary(terminalreporter, config):
    # pytest-randomly (the test extra) shuffles every run; its seed is in the
    # header, which -q leaves out: say it at the end, where a failure is read.
    if config.pluginmanager.hasplugin("randomly"):
        seed = config.getoption("randomly_seed")
        terminalreporter.write_line(
            f"test order shuffled with --randomly-seed={seed} (the same order: "
            "pass it again; the files' own order: -p no:randomly)"
        )
