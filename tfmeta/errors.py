"""One line of an error for a message to a user."""

from __future__ import annotations

import re

_FUNCTION_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")


def first_line(error: BaseException) -> str:
    """A TensorFlow error's message (any error's text) without the graph's
    ``{{function_node ...}}`` annotations: its first line, or "" if empty."""
    message = getattr(error, "message", None) or str(error)
    lines = _FUNCTION_NODE.sub("", message).strip().splitlines()
    return lines[0] if lines else ""
