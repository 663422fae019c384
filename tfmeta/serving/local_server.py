"""A development stand-in for TF Serving's model server: the exports of a
``models.config`` answered over the same REST and gRPC predict APIs.

For trying an export where ``tensorflow_model_server`` is not installed (a
laptop, a CI machine), not for production: it loads every version of every
model with ``tf.saved_model.load`` (the loader TF Serving uses for
SavedModels; ``load``, without its warnings of gradients never taken) and
runs one request per thread. A client written against it
works unchanged against TF Serving.

* REST: ``POST /v1/models/<name>[/versions/<v>]:predict`` with the columnar
  body ``{"signature_name": ..., "inputs": {...}}`` (bytes as ``{"b64": ...}``),
  answered ``{"outputs": {...}}`` or HTTP 400/404 ``{"error": message}``;
  ``GET /v1/models/<name>`` answers the versions' status as TF Serving does.
* gRPC: ``tensorflow.serving.PredictionService/Predict`` (needs the
  ``serving`` extra, tensorflow-serving-api), errors as INVALID_ARGUMENT or
  NOT_FOUND.

A request's inputs are checked against the signature before it runs: an
unknown or missing input, or a tensor of another dtype, is refused with a
message naming the input.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf

from tfmeta.export.layout import existing_versions
from tfmeta.serving.requests import decode_rest_inputs

_PREDICT_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$"
)
_STATUS_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?$")
MAX_BODY_BYTES = 256 * 2**20  # a REST body larger than this is refused unread


class _WithoutGradientWarnings(logging.Filter):
    """Drops TensorFlow's load-time warning that a function's custom
    gradients were not saved: exports carry none (``tfmeta.export``), and
    serving never asks for a gradient."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "with ops with unsaved custom gradients" not in record.getMessage()


def load(path: str):
    """``tf.saved_model.load(path)`` without the warnings of gradients
    serving never takes."""
    quiet = _WithoutGradientWarnings()
    logger = logging.getLogger("absl")
    logger.addFilter(quiet)
    try:
        return tf.saved_model.load(path)
    finally:
        logger.removeFilter(quiet)


class RequestError(ValueError):
    """A request the model cannot answer; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class LocalModels:
    """Every version of every model of ``base_paths`` (name -> model folder), loaded.

    Raises ``FileNotFoundError`` naming a model whose folder holds no version.
    """

    def __init__(self, base_paths: Mapping[str, str]):
        self.loaded: dict[tuple[str, int], Any] = {}
        for name, base_path in base_paths.items():
            versions = existing_versions(base_path)
            if not versions:
                raise FileNotFoundError(
                    f"model {name!r}: its base path {base_path} holds no version folder "
                    "(<base_path>/<integer>/saved_model.pb); export a run into it first"
                )
            for version in versions:
                path = os.path.join(base_path, str(version))
                self.loaded[(name, version)] = load(path)

    def versions(self, name: str) -> list[int]:
        return sorted(v for n, v in self.loaded if n == name)

    def signature(self, name: str, version: int | None, signature_name: str):
        """The concrete function of one signature; RequestError (404) naming what is absent."""
        versions = self.versions(name)
        if not versions or (version is not None and version not in versions):
            raise RequestError(
                f"Servable not found for request: {name} version {version} "
                f"(served: {sorted({n for n, _ in self.loaded})}, versions {versions})",
                404,
            )
        model = self.loaded[(name, version or versions[-1])]
        signature_name = signature_name or "serving_default"
        if signature_name not in model.signatures:
            raise RequestError(
                f"signature {signature_name!r} is not in model {name!r}; "
                f"it has {sorted(model.signatures)}"
            )
        return model.signatures[signature_name]


def input_dtypes(signature) -> dict[str, Any]:
    """Input name -> numpy dtype (``object`` for strings) of a signature."""
    specs = signature.structured_input_signature[1]
    return {
        name: object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
        for name, spec in specs.items()
    }


def check_known_inputs(names, specs) -> None:
    """RequestError naming the first of ``names`` the signature does not take."""
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise RequestError(
            f"input {unknown[0]!r} is not an input of the signature; it takes {sorted(specs)}"
        )


def run_signature(signature, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Runs ``signature`` on ``arrays`` after checking their names and dtypes.

    Raises:
      RequestError: an input the signature does not have, one it needs
        that is missing, or an array of another dtype (each named).
      tf.errors.InvalidArgumentError: the export's own request checks.
    """
    specs = signature.structured_input_signature[1]
    check_known_inputs(arrays, specs)
    missing = sorted(set(specs) - set(arrays))
    if missing:
        raise RequestError(
            f"input {missing[0]!r} is missing; the signature takes {sorted(specs)}"
        )
    tensors = {}
    for name, value in arrays.items():
        expected = specs[name].dtype
        array = np.asarray(value)
        got = tf.string if array.dtype.kind in "OSU" else tf.as_dtype(array.dtype)
        if got != expected:
            raise RequestError(
                f"input {name!r} must be {expected.name}, got {got.name}"
            )
        tensors[name] = tf.constant(array, dtype=expected)
    outputs = signature(**tensors)
    return {name: value.numpy() for name, value in outputs.items()}


def _status_body(models: LocalModels, name: str, version: int | None) -> dict:
    versions = models.versions(name)
    if not versions or (version is not None and version not in versions):
        raise RequestError(f"Could not find any versions of model {name}", 404)
    shown = [version] if version is not None else versions
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in shown
        ]
    }


def rest_server(
    models: LocalModels, host: str = "127.0.0.1", port: int = 8501
) -> http.server.ThreadingHTTPServer:
    """An HTTP server (not yet serving: call ``serve_forever``) answering
    TF Serving's REST predict and model status requests."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            match = _STATUS_PATH.match(self.path)
            if not match:
                return self._answer(404, {"error": f"no such path {self.path}"})
            version = match["version"] and int(match["version"])
            try:
                self._answer(200, _status_body(models, match["name"], version))
            except RequestError as error:
                self._answer(error.status, {"error": str(error)})

        def do_POST(self):
            match = _PREDICT_PATH.match(self.path)
            if not match:
                return self._answer(404, {"error": f"no such path {self.path}"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return self._answer(
                    413, {"error": f"a body of {length} bytes is over {MAX_BODY_BYTES}"}
                )
            version = match["version"] and int(match["version"])
            try:
                body = json.loads(self.rfile.read(length))
                if not isinstance(body, dict) or not isinstance(
                    body.get("inputs"), dict
                ):
                    raise RequestError(
                        'the body must be {"signature_name": ..., "inputs": {name: value}}'
                    )
                signature = models.signature(
                    match["name"], version, body.get("signature_name")
                )
                dtypes = input_dtypes(signature)
                check_known_inputs(body["inputs"], dtypes)  # before decoding any
                try:
                    arrays = decode_rest_inputs(body, dtypes)
                except (ValueError, TypeError, OverflowError) as error:
                    raise RequestError(f"an input could not be read: {error}") from None
                outputs = run_signature(signature, arrays)
            except json.JSONDecodeError as error:
                return self._answer(400, {"error": f"the body is not JSON: {error}"})
            except RequestError as error:
                return self._answer(error.status, {"error": str(error)})
            except tf.errors.InvalidArgumentError as error:
                return self._answer(400, {"error": error.message})
            self._answer(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})

    return http.server.ThreadingHTTPServer((host, port), Handler)


def grpc_server(models: LocalModels, host: str = "127.0.0.1", port: int = 8500):
    """A started ``grpc.Server`` answering ``PredictionService/Predict``
    (needs tensorflow-serving-api); returns (server, bound port)."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            try:
                signature = models.signature(spec.name, version, spec.signature_name)
                arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                outputs = run_signature(signature, arrays)
            except RequestError as error:
                code = grpc.StatusCode.NOT_FOUND if error.status == 404 else None
                context.abort(code or grpc.StatusCode.INVALID_ARGUMENT, str(error))
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.CopyFrom(spec)
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Servicer(), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} (in use?)")
    server.start()
    return server, bound


class LocalServer:
    """REST and (optionally) gRPC servers over one ``LocalModels``, in threads.

    ``with LocalServer(models) as server:`` starts both on free ports of
    127.0.0.1 (``rest_port=0``, ``grpc_port=0``); ``server.rest`` and
    ``server.grpc`` are "host:port" (``grpc`` None when ``grpc_port`` is None).
    """

    def __init__(
        self,
        models: LocalModels,
        host: str = "127.0.0.1",
        rest_port: int | None = 0,
        grpc_port: int | None = 0,
    ):
        self._http = (
            rest_server(models, host, rest_port) if rest_port is not None else None
        )
        self._grpc = None
        self.rest = self.grpc = None
        if self._http:
            self.rest = f"{host}:{self._http.server_address[1]}"
        if grpc_port is not None:
            try:
                self._grpc, bound = grpc_server(models, host, grpc_port)
            except BaseException:
                if self._http:
                    self._http.server_close()
                raise
            self.grpc = f"{host}:{bound}"
        self._thread = None

    def __enter__(self) -> LocalServer:  # noqa: PYI034 (typing.Self needs Python 3.11)
        if self._http:
            self._thread = threading.Thread(
                target=self._http.serve_forever, daemon=True
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serves in this thread until interrupted (gRPC in its own threads)."""
        if self._http:
            self._http.serve_forever()
        elif self._grpc:
            self._grpc.wait_for_termination()

    def close(self) -> None:
        if self._http:
            if self._thread:  # serve_forever runs in our thread: stop it
                self._http.shutdown()
                self._thread.join(timeout=10)
            self._http.server_close()
        if self._grpc:
            self._grpc.stop(grace=None)

    def __exit__(self, *exc) -> None:
        self.close()
