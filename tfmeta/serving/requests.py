"""TF Serving requests for an exported learner: REST JSON bodies, gRPC PredictRequests.

One episode is sent as the inputs of one signature, e.g. for
``adapt_and_predict_images``: ``support_images`` (encoded PNG/JPEG bytes,
``[S]``), ``support_y`` (int32 ``[S]``) and ``query_images`` (``[Q]``).

* REST (``POST /v1/models/<name>[/versions/<v>]:predict``): the columnar
  body ``{"signature_name": ..., "inputs": {name: nested lists}}``, bytes as
  ``{"b64": <base64>}``; the answer is ``{"outputs": {name: nested lists}}``
  or ``{"error": message}``.
* gRPC (``PredictionService/Predict``): a ``PredictRequest`` of
  ``TensorProto``s, from the optional ``tensorflow-serving-api`` package
  (``pip install tfmeta[serving]``), imported only when used.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import pathlib
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
"""The file extensions ``read_episode`` reads as images (any case)."""
Inputs = Mapping[str, Any]  # name -> np.ndarray | list[bytes]


# ----------------------------------------------------------------- episodes
@dataclasses.dataclass(frozen=True)
class ImageEpisode:
    """One task read from image files.

    Attributes:
      support_images, query_images: encoded file contents, ``[S]`` / ``[Q]``.
      support_y: int32 ``[S]``, the class index of each support image.
      class_names: the support sub-folder of each class index.
      support_files, query_files: the paths read, aligned with the images.
    """

    support_images: list[bytes]
    support_y: np.ndarray
    query_images: list[bytes]
    class_names: tuple[str, ...]
    support_files: tuple[str, ...]
    query_files: tuple[str, ...]

    def inputs(self) -> dict[str, Any]:
        """The inputs of the ``adapt_and_predict_images`` signature."""
        return {
            "support_images": list(self.support_images),
            "support_y": self.support_y,
            "query_images": list(self.query_images),
        }


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def read_episode(
    support_dir: str | pathlib.Path, query_dir: str | pathlib.Path
) -> ImageEpisode:
    """Reads ``support_dir/<class>/<image>`` and ``query_dir/<image>`` (PNG or JPEG files).

    Class ``i`` is the ``i``-th sub-folder of ``support_dir`` in sorted order;
    images are sorted by file name. Files are sent as they are (decoding and
    preprocessing happen in the exported graph).

    Raises:
      FileNotFoundError: a folder is missing, ``support_dir`` has no class
        folder, or a class folder or ``query_dir`` holds no image.
    """
    support_dir, query_dir = pathlib.Path(support_dir), pathlib.Path(query_dir)
    for name, folder in (("support_dir", support_dir), ("query_dir", query_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{name} {folder} is not a folder")
    class_dirs = sorted(
        p for p in support_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    if not class_dirs:
        raise FileNotFoundError(
            f"support_dir {support_dir} holds no class folder; expected <support_dir>/<class>/<image>"
        )
    support_files, labels = [], []
    for index, class_dir in enumerate(class_dirs):
        files = _image_files(class_dir)
        if not files:
            raise FileNotFoundError(
                f"class folder {class_dir} holds no image with an extension in {IMAGE_EXTENSIONS}"
            )
        support_files += files
        labels += [index] * len(files)
    query_files = _image_files(query_dir)
    if not query_files:
        raise FileNotFoundError(
            f"query_dir {query_dir} holds no image with an extension in {IMAGE_EXTENSIONS}"
        )
    return ImageEpisode(
        support_images=[p.read_bytes() for p in support_files],
        support_y=np.asarray(labels, np.int32),
        query_images=[p.read_bytes() for p in query_files],
        class_names=tuple(p.name for p in class_dirs),
        support_files=tuple(str(p) for p in support_files),
        query_files=tuple(str(p) for p in query_files),
    )


# --------------------------------------------------------------------- REST
def _is_bytes_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(
        isinstance(v, (bytes, bytearray)) for v in value
    )


def rest_body(inputs: Inputs, signature_name: str) -> dict[str, Any]:
    """The columnar REST predict body: arrays as nested lists, bytes as ``{"b64": ...}``."""
    encoded = {}
    for name, value in inputs.items():
        if _is_bytes_list(value):
            encoded[name] = [
                {"b64": base64.b64encode(bytes(v)).decode("ascii")} for v in value
            ]
        else:
            encoded[name] = signature_array(name, value).tolist()
    return {"signature_name": signature_name, "inputs": encoded}


def decode_rest_inputs(
    body: Mapping[str, Any], dtypes: Mapping[str, Any]
) -> dict[str, Any]:
    """The tensors a REST body carries, converted as TF Serving does with the signature's dtypes.

    ``dtypes``: input name -> numpy dtype, or ``object`` for strings (bytes
    from ``{"b64": ...}``; plain JSON strings as UTF-8).
    """
    arrays = {}
    for name, value in body["inputs"].items():
        if name not in dtypes:
            raise KeyError(
                f"input {name!r} is not in the signature's inputs {sorted(dtypes)}"
            )
        if dtypes[name] is object:
            arrays[name] = np.array(
                [
                    base64.b64decode(v["b64"])
                    if isinstance(v, dict)
                    else str(v).encode()
                    for v in value
                ],
                dtype=object,
            )
        else:
            arrays[name] = np.asarray(value, dtype=dtypes[name])
    return arrays


def rest_url(server: str, model_name: str, version: int | None = None) -> str:
    """``http://<server>/v1/models/<model_name>[/versions/<version>]:predict``."""
    if "://" not in server:
        server = f"http://{server}"
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "")
    return f"{server.rstrip('/')}{path}:predict"


def predict_rest(
    server: str,
    model_name: str,
    inputs: Inputs,
    signature_name: str,
    *,
    version: int | None = None,
    timeout: float = 60.0,
) -> dict[str, np.ndarray]:
    """POSTs one request to a TF Serving REST port; returns the outputs as arrays.

    Raises:
      RuntimeError: the server answered with an error (its message included,
        e.g. an InvalidArgument from the model's request checks).
    """
    data = json.dumps(rest_body(inputs, signature_name)).encode()
    request = urllib.request.Request(
        rest_url(server, model_name, version),
        data=data,
        headers={"Content-Type": "application/json"},
    )
    try:
        answer = _post_when_listening(request, timeout)
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", text)
        except json.JSONDecodeError:
            pass
        raise RuntimeError(
            f"the model server answered HTTP {error.code}: {text}"
        ) from error
    if "error" in answer:
        raise RuntimeError(f"the model server answered: {answer['error']}")
    outputs = answer["outputs"]
    if not isinstance(outputs, dict):  # a single output is not named
        outputs = {"output": outputs}
    return {name: np.asarray(value) for name, value in outputs.items()}


def _post_when_listening(request: urllib.request.Request, timeout: float) -> Any:
    """The JSON answer to ``request``; a server that refuses the connection
    (still starting) is tried again every half second until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.URLError as error:
            refused = isinstance(error.reason, ConnectionRefusedError)
            if not refused or time.monotonic() + 0.5 > deadline:
                raise
        time.sleep(0.5)


# --------------------------------------------------------------------- gRPC
def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    except ImportError as error:
        raise ImportError(
            "gRPC requests need the tensorflow-serving-api package: pip install 'tfmeta[serving]' "
            "(its version must match the installed tensorflow's, e.g. tensorflow-serving-api==2.21.* "
            "for tensorflow 2.21), or use the REST API"
        ) from error
    return predict_pb2, prediction_service_pb2_grpc


def signature_array(name: str, value: Any) -> np.ndarray:
    """``value`` as the dtype tfmeta's signatures take: integers as int32
    (labels), floats as float32 (a Python list or an int64/float64 array
    would otherwise be sent as int64/float64 and refused by the server).

    Raises ValueError naming the input when an integer does not fit int32 or
    the value is not numeric.
    """
    array = np.asarray(value)
    if array.dtype.kind in "iub":
        if array.size and array.dtype.kind != "b":
            low, high = np.iinfo(np.int32).min, np.iinfo(np.int32).max
            if array.min() < low or array.max() > high:
                raise ValueError(
                    f"input {name!r}: integers must fit int32, got values in "
                    f"[{array.min()}, {array.max()}]"
                )
        return array.astype(np.int32)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    raise ValueError(
        f"input {name!r}: expected a numeric array or a list of bytes, got dtype {array.dtype}"
    )


def tensor_proto(value: Any, name: str = "input"):
    """A ``TensorProto``: lists of bytes become DT_STRING ``[n]``, numbers
    int32 or float32 (``signature_array``)."""
    import tensorflow as tf

    if _is_bytes_list(value):
        return tf.make_tensor_proto(
            [bytes(v) for v in value], dtype=tf.string, shape=[len(value)]
        )
    return tf.make_tensor_proto(signature_array(name, value))


def predict_request(
    inputs: Inputs, model_name: str, signature_name: str, version: int | None = None
):
    """A ``tensorflow_serving.apis.predict_pb2.PredictRequest`` for one signature call."""
    predict_pb2, _ = _serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version:
        request.model_spec.version.value = version
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tensor_proto(value, name))
    return request


def predict_grpc(
    server: str,
    model_name: str,
    inputs: Inputs,
    signature_name: str,
    *,
    version: int | None = None,
    timeout: float = 60.0,
) -> dict[str, np.ndarray]:
    """Sends one ``PredictRequest`` to a TF Serving gRPC port; returns the outputs as arrays.

    Raises:
      RuntimeError: the server answered with an error (its status and message).
    """
    import grpc
    import tensorflow as tf

    _, prediction_service_pb2_grpc = _serving_apis()
    request = predict_request(inputs, model_name, signature_name, version)
    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            # wait_for_ready: a server that is starting is waited for (timeout).
            response = stub.Predict(request, timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as error:
            raise RuntimeError(
                f"the model server answered {error.code().name}: {error.details()}"
            ) from error
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def request_arrays(request) -> dict[str, np.ndarray]:
    """The inputs of a ``PredictRequest`` as arrays (strings as an object array of bytes)."""
    import tensorflow as tf

    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def format_predictions(
    episode: ImageEpisode, outputs: Mapping[str, np.ndarray]
) -> list[str]:
    """One line per query file: its predicted class index, class folder and probability."""
    classes = np.asarray(outputs["classes"]).reshape(-1)
    probabilities = np.asarray(outputs["probabilities"])
    width = max(len(pathlib.Path(f).name) for f in episode.query_files)
    lines = [f"{'query':<{width}}  class  name  probability"]
    for file, label, row in zip(episode.query_files, classes, probabilities):
        name = (
            episode.class_names[label] if 0 <= label < len(episode.class_names) else "?"
        )
        lines.append(
            f"{pathlib.Path(file).name:<{width}}  {int(label):>5}  {name}  {float(row[label]):.4f}"
        )
    return lines
