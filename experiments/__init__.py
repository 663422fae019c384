"""tfmeta's training, evaluation, export and benchmark binaries."""

import os

# The default `import tfmeta` sets (see tfmeta/__init__.py), here too because
# TensorFlow reads it when first imported and a binary may import it (or
# Keras) before tfmeta. Not by importing tfmeta: the benchmark's driver must
# not load TensorFlow, since a child process's peak RSS (ru_maxrss) starts
# from its parent's at exec.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
