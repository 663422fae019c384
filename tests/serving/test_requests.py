"""REST bodies and PredictRequests carry the same tensors; the client against server stand-ins."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from experiments.serve_client import run_client
from tests.export import N_WAY, omniglot_png, trained_exports
from tests.helpers import REPO
from tests.serving import grpc_server, rest_server, run_signature
from tfmeta.serving import (
    decode_rest_inputs,
    predict_grpc,
    predict_request,
    read_episode,
    request_arrays,
    rest_body,
    rest_url,
)

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")

SIGNATURE = "adapt_and_predict_images"


def _inputs(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "support_x": rng.normal(size=(6, 28, 28, 1)).astype(np.float32),
        "support_y": np.array([0, 0, 1, 1, 2, 2], np.int32),
        "query_images": [omniglot_png(rng), b'\x00\xff binary \n"bytes"', b""],
    }


def _assert_same(arrays: dict, inputs: dict) -> None:
    assert sorted(arrays) == sorted(inputs)
    for name, value in inputs.items():
        if isinstance(value, list):
            assert arrays[name].shape == (len(value),) and list(arrays[name]) == value
        else:
            assert arrays[name].dtype == value.dtype
            np.testing.assert_array_equal(arrays[name], value)


def test_rest_body_round_trips_to_the_same_tensors():
    inputs = _inputs()
    body = json.loads(json.dumps(rest_body(inputs, SIGNATURE)))
    assert body["signature_name"] == SIGNATURE
    assert set(body["inputs"]["query_images"][0]) == {"b64"}
    dtypes = {"support_x": np.float32, "support_y": np.int32, "query_images": object}
    _assert_same(decode_rest_inputs(body, dtypes), inputs)
    assert rest_url("host:8501", "m") == "http://host:8501/v1/models/m:predict"
    assert (
        rest_url("http://h:1/", "m", 3) == "http://h:1/v1/models/m/versions/3:predict"
    )
    with pytest.raises(ValueError, match="input 'names'"):
        rest_body({"names": np.array(["a", "b"])}, SIGNATURE)
    with pytest.raises(ValueError, match="input 'support_y': integers must fit int32"):
        rest_body({"support_y": np.array([0, 2**40])}, SIGNATURE)


def test_numbers_are_sent_as_the_signatures_dtypes():
    """int64 labels and float64 inputs (numpy's defaults) go out as int32 and
    float32, which every tfmeta signature takes."""
    inputs = {"support_x": np.zeros([2, 3]), "support_y": np.array([0, 1])}
    assert inputs["support_y"].dtype == np.int64
    body = rest_body(inputs, SIGNATURE)
    assert body["inputs"]["support_y"] == [0, 1]
    pytest.importorskip(
        "tensorflow_serving.apis", reason="tensorflow-serving-api not installed"
    )
    arrays = request_arrays(predict_request(inputs, "m", SIGNATURE))
    assert arrays["support_y"].dtype == np.int32
    assert arrays["support_x"].dtype == np.float32


def test_predict_request_round_trips_to_the_same_tensors():
    pytest.importorskip(
        "tensorflow_serving.apis", reason="tensorflow-serving-api not installed"
    )
    from tensorflow_serving.apis import predict_pb2

    inputs = _inputs(1)
    request = predict_request(inputs, "omniglot_maml", SIGNATURE, version=4)
    request = predict_pb2.PredictRequest.FromString(request.SerializeToString())
    assert (request.model_spec.name, request.model_spec.signature_name) == (
        "omniglot_maml",
        SIGNATURE,
    )
    assert request.model_spec.version.value == 4
    assert request.inputs["query_images"].dtype == tf.string.as_datatype_enum
    _assert_same(request_arrays(request), inputs)
    # The REST body of the same inputs decodes to the same tensors as the PredictRequest.
    body = json.loads(json.dumps(rest_body(inputs, SIGNATURE)))
    rest = decode_rest_inputs(
        body, {"support_x": np.float32, "support_y": np.int32, "query_images": object}
    )
    grpc_arrays = request_arrays(request)
    for name in inputs:
        np.testing.assert_array_equal(rest[name], grpc_arrays[name])


def test_missing_serving_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_serving.apis", None)
    with pytest.raises(ImportError, match=r"pip install 'tfmeta\[serving\]'"):
        predict_request(_inputs(), "m", SIGNATURE)


def _write_episode(
    root: pathlib.Path, seed: int = 0
) -> tuple[pathlib.Path, pathlib.Path]:
    rng = np.random.default_rng(seed)
    support, query = root / "support", root / "query"
    for name in ("zeta", "alpha", "mu"):  # class index: alpha 0, mu 1, zeta 2
        (support / name).mkdir(parents=True)
        for shot in range(2):
            (support / name / f"{shot}.png").write_bytes(omniglot_png(rng))
    (support / "mu" / "notes.txt").write_text("not an image, skipped")
    query.mkdir()
    for i in range(4):
        (query / f"q{i}.png").write_bytes(omniglot_png(rng))
    jpeg = tf.io.encode_jpeg(tf.io.decode_png(omniglot_png(rng))).numpy()
    (query / "q4.JPG").write_bytes(jpeg)
    return support, query


def test_read_episode_labels_classes_by_sorted_folder(tmp_path):
    support, query = _write_episode(tmp_path)
    episode = read_episode(support, query)
    assert episode.class_names == ("alpha", "mu", "zeta")
    np.testing.assert_array_equal(episode.support_y, [0, 0, 1, 1, 2, 2])
    assert [pathlib.Path(f).name for f in episode.query_files] == [
        "q0.png",
        "q1.png",
        "q2.png",
        "q3.png",
        "q4.JPG",
    ]
    assert episode.support_images[2] == (support / "mu" / "0.png").read_bytes()
    (support / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no image"):
        read_episode(support, query)
    with pytest.raises(FileNotFoundError, match="query_dir .* is not a folder"):
        read_episode(support, tmp_path / "absent")


@pytest.fixture(scope="module")
def maml(tmp_path_factory):
    exported = trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")[
        "maml"
    ]
    return {"omniglot_maml": str(exported.export_dir)}, tf.saved_model.load(
        str(exported.path)
    )


def _expected_lines(model, support, query) -> tuple[np.ndarray, list[str]]:
    episode = read_episode(support, query)
    arrays = {
        "support_images": np.array(episode.support_images, object),
        "support_y": episode.support_y,
        "query_images": np.array(episode.query_images, object),
    }
    outputs = run_signature(model.signatures[SIGNATURE], arrays)
    return outputs["classes"], [
        f"{pathlib.Path(f).name} {c} {episode.class_names[c]}"
        for f, c in zip(episode.query_files, outputs["classes"])
    ]


def _table(lines: list[str]) -> list[str]:
    """'file class name' per query from the client's printed lines (probability dropped)."""
    return [" ".join(line.split()[:3]) for line in lines[1:]]


def test_client_over_rest_prints_the_models_predictions(maml, tmp_path):
    base_paths, model = maml
    support, query = _write_episode(tmp_path)
    _, expected = _expected_lines(model, support, query)
    with rest_server(base_paths) as server:
        lines = run_client(server, "omniglot_maml", str(support), str(query))
        assert _table(lines) == expected
        probabilities = [float(line.split()[-1]) for line in lines[1:]]
        assert all(1.0 / N_WAY <= p <= 1.0 for p in probabilities)
        # The binary prints the same table.
        done = subprocess.run(
            [
                sys.executable, "-m", "experiments.serve_client", f"--server={server}",
                "--model_name=omniglot_maml", f"--support_dir={support}", f"--query_dir={query}",
            ],
            cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert _table(done.stdout.strip().splitlines()) == expected
        # A bad episode comes back as the model's InvalidArgument message.
        (query / "broken.png").write_bytes(b"not a png")
        with pytest.raises(
            RuntimeError,
            match="(?s)HTTP 400: .*query_images must be a PNG or JPEG image",
        ):
            run_client(server, "omniglot_maml", str(support), str(query))
        with pytest.raises(RuntimeError, match="HTTP 404"):
            run_client(server, "omniglot_maml", str(support), str(query), version=9)
        # A truncated PNG is named by its input, not by the decoder's message.
        (query / "broken.png").write_bytes(omniglot_png(np.random.default_rng(5))[:142])
        with pytest.raises(
            RuntimeError,
            match="(?s)HTTP 400: .*every PNG of query_images must be complete",
        ):
            run_client(server, "omniglot_maml", str(support), str(query))


def test_requests_of_another_dtype_or_input_are_refused_by_name(maml):
    """What a hand-built request gets wrong is named: int64 labels, an input
    the signature lacks, a missing one."""
    pytest.importorskip(
        "tensorflow_serving.apis", reason="tensorflow-serving-api not installed"
    )
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    base_paths, _ = maml
    rng = np.random.default_rng(0)
    inputs = {
        "support_images": [omniglot_png(rng) for _ in range(N_WAY)],
        "support_y": np.arange(N_WAY, dtype=np.int64),
        "query_images": [omniglot_png(rng)],
    }
    with grpc_server(base_paths) as server:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(server)
        )

        def refusal(arrays) -> str:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "omniglot_maml"
            request.model_spec.signature_name = SIGNATURE
            for name, value in arrays.items():
                proto = (
                    tf.make_tensor_proto(value, dtype=tf.string)
                    if isinstance(value, list)
                    else tf.make_tensor_proto(value)
                )
                request.inputs[name].CopyFrom(proto)
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request, timeout=60)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            return raised.value.details()

        assert refusal(inputs) == "input 'support_y' must be int32, got int64"
        extra = {
            **inputs,
            "support_y": inputs["support_y"].astype(np.int32),
            "x": [b""],
        }
        assert refusal(extra).startswith("input 'x' is not an input of the signature")
        missing = {k: v for k, v in extra.items() if k not in ("x", "query_images")}
        assert refusal(missing).startswith("input 'query_images' is missing")
        # The client sends the same labels as int32, and is answered.
        lines = predict_grpc(server, "omniglot_maml", inputs, SIGNATURE)
        assert lines["classes"].shape == (1,)


def test_client_over_grpc_prints_the_models_predictions(maml, tmp_path):
    pytest.importorskip(
        "tensorflow_serving.apis", reason="tensorflow-serving-api not installed"
    )
    base_paths, model = maml
    support, query = _write_episode(tmp_path, seed=1)
    _, expected = _expected_lines(model, support, query)
    with grpc_server(base_paths) as server:
        lines = run_client(
            server, "omniglot_maml", str(support), str(query), use_grpc=True
        )
        assert _table(lines) == expected
        (support / "zeta" / "0.png").unlink()
        (support / "zeta" / "1.png").unlink()
        (support / "zeta" / "2.jpeg").write_bytes(b"\xff\xd8\xff but truncated")
        with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
            run_client(server, "omniglot_maml", str(support), str(query), use_grpc=True)
