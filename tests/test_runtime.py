"""tfmeta.runtime: the platform tuning a program opts into, each setting in a
fresh interpreter (TensorFlow reads or fixes them once per process)."""

import ctypes
import re

import pytest

from tests.helpers import fresh_python
from tfmeta import runtime

_NOTHING_ELSE = "cpu_threading=None, malloc_arenas=None"


@pytest.mark.parametrize(
    "env_value, argument, expected",
    [
        (None, "", "True"),  # tfmeta's default: on
        ("0", "", "False"),  # the user's variable wins
        (None, ", onednn=False", "False"),
        ("1", ", onednn=False", "True"),
    ],
)
def test_configure_before_tensorflow_sets_onednn_unless_the_user_chose(
    env_value, argument, expected
):
    code = (
        "from tfmeta import runtime\n"
        f"settings = runtime.configure({_NOTHING_ELSE}{argument})\n"
        "import tensorflow\n"
        "print(runtime.onednn_enabled(), settings.onednn)\n"
    )
    assert fresh_python(code, env_value) == [expected, expected]


def test_configure_after_tensorflow_keeps_what_it_cannot_change_and_warns():
    code = (
        "import os, warnings\n"
        "import tensorflow as tf\n"
        "from tfmeta import runtime\n"
        "on = runtime.onednn_enabled()\n"
        "def configure(**settings):\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        "        result = runtime.configure(malloc_arenas=None, **settings)\n"
        "    print(len(caught), [w.category.__name__ for w in caught])\n"
        "    print(result.cpu_threading, result.intra_op_threads)\n"
        "    return caught\n"
        "# imported, not started: the thread pools still apply, oneDNN does not\n"
        "(warning,) = configure(cpu_threading='tasks', onednn=not on)\n"
        "print('keeps them so' in str(warning.message), "
        "'TF_ENABLE_ONEDNN_OPTS' in os.environ)\n"
        "tf.constant(1.0) + 1.0\n"
        "(warning,) = configure(cpu_threading='ops', onednn=on)\n"
        "print('before TensorFlow starts' in str(warning.message))\n"
    )
    words = fresh_python(code)
    assert words == ["1", "['RuntimeWarning']", "tasks", "1", "True", "False"] + [
        "1",
        "['RuntimeWarning']",
        "None",
        "1",
        "True",
    ]


@pytest.mark.parametrize(
    "settings, error, message",
    [
        ({"cpu_threading": "cores"}, ValueError, "('auto', 'tasks', 'ops')"),
        ({"malloc_arenas": 0}, ValueError, "positive number, got 0"),
        ({"malloc_arenas": "two"}, ValueError, "('cores', 'glibc')"),
        ({"malloc_arenas": True}, ValueError, "got True"),
        ({"onednn": "yes"}, TypeError, "onednn must be True, False or None"),
        ({"native_kernels": 0}, TypeError, "native_kernels must be"),
    ],
)
def test_configure_checks_every_value_before_changing_anything(
    monkeypatch, settings, error, message
):
    monkeypatch.setattr(runtime, "_native_kernels", [True])
    settings = {"native_kernels": False, **settings}
    with pytest.raises(error, match=re.escape(message)):
        runtime.configure(**settings)
    assert runtime._native_kernels == [True]


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
        "from tfmeta import runtime\n"
        "settings = runtime.configure(cpu_threading=None, malloc_arenas=1)\n"
        "print(settings.malloc_arenas)\n"
        "for bad in (0, True, '2'):\n"
        "    try:\n"
        "        runtime.set_malloc_arenas(bad)\n"
        "    except ValueError as error:\n"
        "        print('positive integer' in str(error))\n" + _COUNT_HEAPS
    )
    assert fresh_python(capped) == ["1", "True", "True", "True", "1"]
    uncapped = "import tfmeta\n" + _COUNT_HEAPS  # importing tfmeta caps nothing
    assert int(fresh_python(uncapped)[0]) > 1


def test_cpu_threading_sets_the_thread_pools_before_tensorflow_starts():
    code = (
        "import os, tfmeta, tensorflow as tf\n"
        "from tfmeta import runtime\n"
        "print(tfmeta.set_cpu_threading is runtime.set_cpu_threading)\n"
        "t = tf.config.threading\n"
        "runtime.set_cpu_threading('tasks')\n"
        "print(t.get_intra_op_parallelism_threads(), "
        "t.get_inter_op_parallelism_threads() == len(os.sched_getaffinity(0)))\n"
        "tf.constant(1.0) + 1.0\n"
        "runtime.set_cpu_threading('tasks')  # already so: no error\n"
        "try:\n"
        "    runtime.set_cpu_threading('ops')\n"
        "except RuntimeError as error:\n"
        "    print('before TensorFlow starts' in str(error))\n"
        "try:\n"
        "    runtime.set_cpu_threading('cores')\n"
        "except ValueError as error:\n"
        "    print(\"('tasks', 'ops')\" in str(error))\n"
    )
    assert fresh_python(code) == ["True", "1", "True", "True", "True"]


def test_auto_threading_is_ops_for_xla_and_tasks_otherwise():
    code = (
        "from tfmeta import runtime\n"
        "for jit_compile in (False, True):\n"
        "    settings = runtime.configure(malloc_arenas=None, jit_compile=jit_compile)\n"
        "    print(settings.cpu_threading)\n"
    )
    # The second call finds TensorFlow not yet started: "ops" applies too.
    assert fresh_python(code) == ["tasks", "ops"]


@pytest.mark.parametrize(
    "cores,jit_compile,tasks_per_step,expected",
    [
        (2, False, None, "tasks"),  # unknown meta-batch: as before
        (2, False, 2, "tasks"),
        (2, False, 32, "tasks"),
        (2, False, 1, "ops"),  # one task a step: its ops split over the cores
        (8, False, 4, "ops"),
        (1, False, 1, "tasks"),
        (2, True, 32, "ops"),
    ],
)
def test_auto_threading_follows_xla_and_the_tasks_of_a_step(
    monkeypatch, cores, jit_compile, tasks_per_step, expected
):
    monkeypatch.setattr(runtime, "_cores", lambda: cores)
    assert runtime.resolve_cpu_threading("auto", jit_compile, tasks_per_step) == (
        expected
    )
    # A mode the user chose stands.
    assert runtime.resolve_cpu_threading("tasks", jit_compile, tasks_per_step) == (
        "tasks"
    )


@pytest.mark.parametrize("tasks_per_step", [0, -1, 1.5, True, "2"])
def test_tasks_per_step_must_be_a_positive_integer(tasks_per_step):
    with pytest.raises(ValueError, match="tasks_per_step must be a positive integer"):
        runtime.resolve_cpu_threading("auto", False, tasks_per_step)
