"""A process's own peak resident memory, for the tests' memory bounds.

Read in the process that does the work (a test's fresh interpreter imports
this module: it loads nothing but the standard library). Never
``resource.getrusage(...).ru_maxrss``: on Linux a child's ``ru_maxrss`` starts
from its parent's resident size at fork and exec, so a child of a pytest
worker that holds 2 GB reports at least 2 GB whatever it does. ``VmHWM`` in
``/proc/self/status`` is the high-water mark of the process's own address
space, new at exec; writing "5" to ``/proc/self/clear_refs`` sets it back to
the current resident size (Linux 4.0 and later), so that one piece of work
can be measured on its own.
"""

from __future__ import annotations

STATUS = "/proc/self/status"
CLEAR_REFS = "/proc/self/clear_refs"


def _status_mib(field: str) -> float | None:
    try:
        with open(STATUS) as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def peak_resident_mib() -> float | None:
    """This process's peak resident memory in MiB (``VmHWM``): since exec, or
    since the last ``reset_peak()``; None where /proc gives no ``VmHWM``."""
    return _status_mib("VmHWM")


def resident_mib() -> float | None:
    """This process's resident memory now in MiB (``VmRSS``); None without /proc."""
    return _status_mib("VmRSS")


def reset_peak() -> bool:
    """Sets this process's peak back to its resident size now; False where
    the kernel does not allow it (the peak then counts from exec)."""
    try:
        with open(CLEAR_REFS, "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True
