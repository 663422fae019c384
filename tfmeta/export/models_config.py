"""TF Serving's model config file, ``models.config``, that names every model
of a ``<models>/`` folder (``tensorflow_model_server --model_config_file``).

Where tensorflow-serving-api (the ``serving`` extra) is installed, the file is
TF Serving's own ``ModelServerConfig`` message, read and written with
protobuf's ``text_format``: whatever else a hand-edited file sets (a model's
version policy, labels, logging) is kept. Without it, a plain writer writes
the same text for the three fields tfmeta sets (``name``, ``base_path``,
``model_platform``), and a small reader reads back files that hold nothing
else, which is all it needs to keep the other models' entries; any other file
is refused, naming it and the extra that would read it.
"""

from __future__ import annotations

import importlib
import os
import re

_FIELDS = ("name", "base_path", "model_platform")
# Protobuf text format, as much as the plain reader needs: strings, names,
# braces and colons; "#" starts a comment.
_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z_]\w*|[{}:]|.')
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t", "r": "\r"}
_QUOTED = {value: f"\\{key}" for key, value in _ESCAPES.items() if key != "'"}


class ModelsConfigError(ValueError):
    """A ``models.config`` that cannot be read or updated; the message names
    the file and says what is wrong with it."""


def _protobuf():
    """TF Serving's ``model_server_config_pb2`` and protobuf's ``text_format``,
    or None where tensorflow-serving-api is not installed."""
    try:
        return (
            importlib.import_module(
                "tensorflow_serving.config.model_server_config_pb2"
            ),
            importlib.import_module("google.protobuf.text_format"),
        )
    except ImportError:
        return None


def read_models_config(path: str) -> list[dict[str, str]]:
    """The model entries (``name``, ``base_path``, ``model_platform``) of the
    ``models.config`` at ``path``, in the file's order.

    Raises:
      ModelsConfigError: the file is not a model config file (or, without
        tensorflow-serving-api, holds settings the plain reader cannot read).
    """
    text = _read_text(path)
    protobuf = _protobuf()
    if protobuf is None:
        return _parse_plain(path, text)
    config = _parse_message(path, text, protobuf)
    return [
        {field: getattr(model, field) for field in _FIELDS}
        for model in config.model_config_list.config
    ]


def check_model_entry(model_name: str, base_path: str) -> None:
    """Raises ValueError for a model name or base path the file cannot hold
    (empty, a quote or a newline), or a model name TF Serving's REST API
    cannot address (``/v1/models/<name>:predict``: no "/" or ":")."""
    for label, value in (("model name", model_name), ("base path", base_path)):
        if not value or '"' in value or "\n" in value:
            raise ValueError(
                f"{label} must be non-empty without quotes or newlines, got {value!r}"
            )
    if "/" in model_name or ":" in model_name:
        raise ValueError(
            f"model name must hold no '/' or ':' (TF Serving's REST API addresses "
            f"it as /v1/models/<name>:predict), got {model_name!r}"
        )


def write_models_config(path: str, model_name: str, base_path: str) -> str:
    """Adds or updates ``model_name`` in the model config file ``path``.

    Other models' entries are kept, so one file can serve every model of a
    ``<models>/`` folder. ``base_path`` is the model folder as the server sees
    it (e.g. ``/models/<model_name>`` inside the TF Serving container). The
    existing file is read first: one that cannot be read is left as it is
    (ModelsConfigError). Written atomically. Returns the file's text.
    """
    check_model_entry(model_name, base_path)
    exists = os.path.exists(path)
    protobuf = _protobuf()
    if protobuf is None:
        entries = _parse_plain(path, _read_text(path)) if exists else []
        entry = {
            "name": model_name,
            "base_path": base_path,
            "model_platform": "tensorflow",
        }
        names = [e["name"] for e in entries]
        if model_name in names:
            entries[names.index(model_name)] = entry
        else:
            entries.append(entry)
        text = format_plain(entries)
    else:
        config_pb2, text_format = protobuf
        if exists:
            config = _parse_message(path, _read_text(path), protobuf)
        else:
            config = config_pb2.ModelServerConfig()
        models = config.model_config_list.config
        matching = [model for model in models if model.name == model_name]
        model = matching[0] if matching else models.add()
        model.name = model_name
        model.base_path = base_path
        model.model_platform = "tensorflow"
        text = text_format.MessageToString(config, as_utf8=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)
    return text


def format_plain(entries: list[dict[str, str]]) -> str:
    """The text ``text_format`` writes for ``entries`` (no protobuf needed)."""
    lines = ["model_config_list {"]
    for entry in entries:
        lines.append("  config {")
        lines += [
            f"    {field}: {_quote(entry[field])}" for field in _FIELDS if entry[field]
        ]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    return '"' + "".join(_QUOTED.get(c, c) for c in value) + '"'


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as error:
        raise ModelsConfigError(
            f"{path} is not a TF Serving model config file (not UTF-8 text: {error})"
        ) from None


def _parse_message(path: str, text: str, protobuf):
    """``text`` as a ``ModelServerConfig`` that holds a ``model_config_list``."""
    config_pb2, text_format = protobuf
    config = config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as error:
        raise ModelsConfigError(
            f"{path} is not a TF Serving model config file ({error}); fix or "
            "remove it, or write to another file"
        ) from None
    if config.WhichOneof("config") == "custom_model_config":
        raise ModelsConfigError(
            f"{path} holds a custom_model_config, not a model_config_list: "
            "tfmeta cannot add a model to it"
        )
    return config


def _parse_plain(path: str, text: str) -> list[dict[str, str]]:
    """The entries of a file holding only names, base paths and platforms:
    ``model_config_list { config { name: "..." base_path: "..." } ... }``."""
    tokens = [t for t in _TOKEN.findall(text) if not t.isspace() and t[0] != "#"]
    entries = _plain_entries(tokens)
    if entries is None:
        raise ModelsConfigError(
            f"{path} is not a model config file tfmeta can read without "
            "tensorflow-serving-api (it is garbled, or holds settings other "
            f"than {', '.join(_FIELDS)}): install it (pip install "
            "'tfmeta[serving]') to update the file keeping those settings, or "
            "write to another file"
        )
    return entries


def _plain_entries(tokens: list[str]) -> list[dict[str, str]] | None:
    """The entries ``tokens`` spell, or None where they spell anything else."""
    position = 0

    def take(*expected: str) -> str | None:
        nonlocal position
        if position < len(tokens) and (not expected or tokens[position] in expected):
            position += 1
            return tokens[position - 1]
        return None

    def open_block(name: str) -> bool:
        if take(name) is None:
            return False
        take(":")  # optional before a message
        return take("{") is not None

    entries: list[dict[str, str]] = []
    if not tokens:
        return entries
    if not open_block("model_config_list"):
        return None
    while take("}") is None:
        if not open_block("config"):
            return None
        entry, seen = dict.fromkeys(_FIELDS, ""), set()
        while take("}") is None:
            field = take(*_FIELDS)
            value = _unquote(take() or "") if field and take(":") else None
            if value is None or field in seen:
                return None
            entry[field] = value
            seen.add(field)
        entries.append(entry)
    return entries if position == len(tokens) else None


def _unquote(token: str) -> str | None:
    """A quoted string token's value, or None (not a string, or an escape the
    plain reader does not know)."""
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        return None
    value, escaped = [], False
    for c in token[1:-1]:
        if escaped:
            if c not in _ESCAPES:
                return None
            value.append(_ESCAPES[c])
            escaped = False
        elif c == "\\":
            escaped = True
        else:
            value.append(c)
    return "".join(value)
