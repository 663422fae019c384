"""The product's development server (``tfmeta.serving.local_server``) on
free ports of 127.0.0.1, standing in for tensorflow_model_server, which
cannot be installed here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from tfmeta.serving.local_server import LocalModels, LocalServer, run_signature

__all__ = ["grpc_server", "rest_server", "run_signature"]


@contextlib.contextmanager
def rest_server(base_paths: Mapping[str, str]) -> Iterator[str]:
    """Yields "127.0.0.1:<port>" of a REST predict server."""
    with LocalServer(LocalModels(base_paths), grpc_port=None) as server:
        yield server.rest


@contextlib.contextmanager
def grpc_server(base_paths: Mapping[str, str]) -> Iterator[str]:
    """Yields "127.0.0.1:<port>" of a gRPC PredictionService (needs tensorflow-serving-api)."""
    with LocalServer(LocalModels(base_paths), rest_port=None) as server:
        yield server.grpc
