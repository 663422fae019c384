"""Tests of tfmeta."""

# tfmeta first, so TensorFlow starts with its runtime defaults (oneDNN kernels).
import tfmeta  # noqa: F401
