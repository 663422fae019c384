"""Tests of tfmeta."""

# The platform tuning the binaries run with (oneDNN kernels above all), set
# before any test imports TensorFlow; thread pools and malloc stay as they are.
from tfmeta import runtime

runtime.configure(cpu_threading=None, malloc_arenas=None)
