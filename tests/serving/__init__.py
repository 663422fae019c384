"""Stand-ins for tensorflow_model_server (which cannot be installed here) on 127.0.0.1.

Each serves the latest version of ``<base_path>/<version>/`` loaded with
``tf.saved_model.load`` and answers like TF Serving's predict APIs: REST
``POST /v1/models/<name>[/versions/<v>]:predict`` (columnar JSON, bytes as
``{"b64": ...}``, errors as HTTP 400 ``{"error": message}``) and gRPC
``PredictionService/Predict`` (errors as INVALID_ARGUMENT).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import threading
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf

from tfmeta.export import existing_versions
from tfmeta.serving import decode_rest_inputs

_PREDICT_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(/versions/(?P<version>\d+))?:predict$"
)


class Models:
    """Loaded SavedModels by (model name, version); the latest version by default."""

    def __init__(self, base_paths: Mapping[str, str]):
        self.loaded = {}
        for name, base_path in base_paths.items():
            for version in existing_versions(base_path):
                path = os.path.join(base_path, str(version))
                self.loaded[(name, version)] = tf.saved_model.load(path)

    def signature(self, name: str, version: int | None, signature_name: str):
        versions = sorted(v for n, v in self.loaded if n == name)
        if not versions or (version is not None and version not in versions):
            raise KeyError(f"Servable not found for request: {name} version {version}")
        model = self.loaded[(name, version or versions[-1])]
        return model.signatures[signature_name or "serving_default"]


def _input_dtypes(signature) -> dict:
    specs = signature.structured_input_signature[1]
    return {
        name: object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
        for name, spec in specs.items()
    }


def run_signature(signature, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = signature(**{name: tf.constant(value) for name, value in arrays.items()})
    return {name: value.numpy() for name, value in outputs.items()}


@contextlib.contextmanager
def rest_server(base_paths: Mapping[str, str]) -> Iterator[str]:
    """Yields "127.0.0.1:<port>" of a REST predict stand-in."""
    models = Models(base_paths)

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

        def do_POST(self):
            match = _PREDICT_PATH.match(self.path)
            if not match:
                return self._answer(404, {"error": f"no such path {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            version = match["version"] and int(match["version"])
            try:
                signature = models.signature(
                    match["name"], version, body.get("signature_name")
                )
                arrays = decode_rest_inputs(body, _input_dtypes(signature))
                outputs = run_signature(signature, arrays)
            except KeyError as error:
                return self._answer(404, {"error": str(error)})
            except tf.errors.InvalidArgumentError as error:
                return self._answer(400, {"error": error.message})
            self._answer(200, {"outputs": {k: v.tolist() for k, v in outputs.items()}})

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def grpc_server(base_paths: Mapping[str, str]) -> Iterator[str]:
    """Yields "127.0.0.1:<port>" of a gRPC PredictionService stand-in (needs tensorflow-serving-api)."""
    from concurrent import futures

    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    models = Models(base_paths)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            try:
                signature = models.signature(spec.name, version, spec.signature_name)
                arrays = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                outputs = run_signature(signature, arrays)
            except KeyError as error:
                context.abort(grpc.StatusCode.NOT_FOUND, str(error))
            except tf.errors.InvalidArgumentError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, error.message)
            response = predict_pb2.PredictResponse()
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        Servicer(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
