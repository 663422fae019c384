"""Package-level runtime defaults."""

import ctypes
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO


def _python(code: str, onednn_env: str | None) -> list[str]:
    """The words ``code`` prints in a fresh interpreter at the repository root,
    with TF_ENABLE_ONEDNN_OPTS set to ``onednn_env`` (None: unset)."""
    unset = ("TF_ENABLE_ONEDNN_OPTS", "MALLOC_ARENA_MAX")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if onednn_env is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn_env
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.parametrize("env_value, expected", [(None, "True"), ("0", "False")])
def test_onednn_kernels_on_unless_the_user_chose(env_value, expected):
    # Importing tfmeta before TensorFlow turns oneDNN on; a user's setting wins.
    code = "import tfmeta, tensorflow as tf; print(tfmeta.onednn_enabled())"
    assert _python(code, env_value)[-1] == expected


def test_benchmark_driver_does_not_load_tensorflow():
    # A child's peak RSS (ru_maxrss) starts from its parent's at exec, so the
    # driver that spawns the timed workers and the yardstick must stay small.
    code = (
        "import os, sys, experiments.benchmark; "
        "print('tensorflow' in sys.modules, os.environ['TF_ENABLE_ONEDNN_OPTS'])"
    )
    assert _python(code, None) == ["False", "1"]


_COUNT_HEAPS = (
    "import ctypes, re, tempfile, threading\n"
    "import tensorflow as tf\n"
    "libc = ctypes.CDLL(None)\n"
    "libc.malloc.restype = ctypes.c_void_p\n"
    "libc.free.argtypes = [ctypes.c_void_p]\n"
    "def allocate():\n"
    "    for _ in range(2000):\n"
    "        libc.free(libc.malloc(4096))\n"
    "threads = [threading.Thread(target=allocate) for _ in range(4)]\n"
    "[t.start() for t in threads]; [t.join() for t in threads]\n"
    "x = tf.random.normal([64, 64])\n"
    "for _ in range(3):\n"
    "    x = tf.matmul(x, x) / 64.0\n"
    "libc.fopen.restype = ctypes.c_void_p\n"
    "libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]\n"
    "libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]\n"
    "libc.fclose.argtypes = [ctypes.c_void_p]\n"
    "with tempfile.NamedTemporaryFile() as f:\n"
    "    stream = libc.fopen(f.name.encode(), b'w')\n"
    "    libc.malloc_info(0, stream)\n"
    "    libc.fclose(stream)\n"
    "    print(len(re.findall('<heap nr=', open(f.name).read())))\n"
)


@pytest.mark.skipif(
    not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"), reason="needs glibc"
)
def test_malloc_arenas_caps_the_heaps_of_tensorflow_and_other_threads():
    """Threads that allocate get arenas of their own unless capped; the count
    comes from glibc's malloc_info."""
    capped = (
        "import tfmeta\n"
        "print(tfmeta.set_malloc_arenas(1))\n"
        "for bad in (0, True, '2'):\n"
        "    try:\n"
        "        tfmeta.set_malloc_arenas(bad)\n"
        "    except ValueError as error:\n"
        "        print('positive integer' in str(error))\n" + _COUNT_HEAPS
    )
    assert _python(capped, None) == ["True", "True", "True", "True", "1"]
    uncapped = "import tfmeta\n" + _COUNT_HEAPS
    assert int(_python(uncapped, None)[0]) > 1


def test_cpu_threading_sets_the_thread_pools_before_tensorflow_starts():
    code = (
        "import os, tfmeta, tensorflow as tf\n"
        "t = tf.config.threading\n"
        "tfmeta.set_cpu_threading('tasks')\n"
        "print(t.get_intra_op_parallelism_threads(), "
        "t.get_inter_op_parallelism_threads() == len(os.sched_getaffinity(0)))\n"
        "tf.constant(1.0) + 1.0\n"
        "tfmeta.set_cpu_threading('tasks')  # already so: no error\n"
        "try:\n"
        "    tfmeta.set_cpu_threading('ops')\n"
        "except RuntimeError as error:\n"
        "    print('before TensorFlow starts' in str(error))\n"
        "try:\n"
        "    tfmeta.set_cpu_threading('cores')\n"
        "except ValueError as error:\n"
        "    print(\"('tasks', 'ops')\" in str(error))\n"
    )
    assert _python(code, None) == ["1", "True", "True", "True"]
