"""tfmeta's version (written into exports)."""

__version__ = "0.1.0"
