"""The exported SavedModel: same predictions as the learner, clear errors, images as in training."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.export import (
    N_WAY,
    embedding_episode,
    episode,
    in_memory_learner,
    omniglot_png,
    trained_exports,
)
from tfmeta.data import load_image_folder, preprocess_omniglot_image
from tfmeta.export import METADATA_FILE
from tfmeta.export.signatures import decode_folder_image
from tfmeta.serving.local_server import LocalModels

# The trained exports are built once per worker: their tests run on one.
pytestmark = pytest.mark.xdist_group("trained_exports")

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

# Runs in a fresh interpreter: loads each export and runs its signatures on the saved inputs.
_LOAD_AND_RUN = """
import sys
import numpy as np
import tensorflow as tf

inputs, output = sys.argv[1], sys.argv[2]
arrays = dict(np.load(inputs))
results = {}
for key in sorted({k.split("/")[0] for k in arrays}):
    loaded = tf.saved_model.load(arrays[key + "/path"].item())
    for signature in ("serving_default", "predict"):
        names = loaded.signatures[signature].structured_input_signature[1]
        feed = {n: tf.constant(arrays[key + "/" + n]) for n in names}
        for name, value in loaded.signatures[signature](**feed).items():
            results[key + "/" + signature + "/" + name] = value.numpy()
np.savez(output, **results)
"""


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return trained_exports(tmp_path_factory.getbasetemp() / "trained_exports")


@pytest.fixture(scope="module")
def maml_model(exports):
    return tf.saved_model.load(str(exports["maml"].path))


def _sinusoid_episode(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, size=(12, 1)).astype(np.float32)
    return x[:5], (2.0 * np.sin(x[:5] - 0.5)).astype(np.float32), x[5:]


def test_fresh_process_gives_the_in_memory_learners_predictions(exports, tmp_path):
    """MAML, FOMAML, Reptile (2-shot: 6 support > its evaluation mini-batch of 5),
    sinusoid, and LEO (whose ``predict`` decodes the support set's codes unadapted)."""
    arrays, expected = {}, {}
    for name in ("maml", "fomaml", "reptile", "sinusoid", "leo"):
        learner = in_memory_learner(exports[name])
        if name == "sinusoid":
            support_x, support_y, query_x = _sinusoid_episode(1)
            output = "y"
        elif name == "leo":
            support_x, support_y, query_x = embedding_episode(seed=1, k_shot=2)
            output = "logits"
        else:
            support_x, support_y, query_x = episode(seed=1, k_shot=2)
            output = "logits"
        fast = learner.adapt(tf.constant(support_x), tf.constant(support_y))
        adapted = learner.predict(fast, tf.constant(query_x), tf.constant(support_x))
        if name == "leo":
            unadapted = learner.leo_adapt(
                learner.model.split_parameters(learner.parameters()),
                tf.constant(support_x),
                tf.constant(support_y),
                0,
                0,
                training=False,
            ).weights
            theta = learner.predict(unadapted, tf.constant(query_x))
        else:
            theta = learner.predict(
                learner.parameters(), tf.constant(query_x), tf.constant(support_x)
            )
        expected[f"{name}/serving_default/{output}"] = adapted.numpy()
        expected[f"{name}/predict/{output}"] = theta.numpy()
        arrays.update(
            {
                f"{name}/path": np.array(str(exports[name].path)),
                f"{name}/support_x": support_x,
                f"{name}/support_y": support_y,
                f"{name}/query_x": query_x,
            }
        )
    np.savez(tmp_path / "inputs.npz", **arrays)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_AND_RUN,
            tmp_path / "inputs.npz",
            tmp_path / "out.npz",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    served = dict(np.load(tmp_path / "out.npz"))
    for key, value in expected.items():
        np.testing.assert_allclose(served[key], value, rtol=0, atol=1e-5, err_msg=key)
    # Adaptation changes the predictions (the inner loop ran), and the classes follow the logits.
    assert (
        np.abs(
            expected["maml/serving_default/logits"] - expected["maml/predict/logits"]
        ).max()
        > 1e-3
    )
    np.testing.assert_array_equal(
        served["reptile/serving_default/classes"],
        np.argmax(expected["reptile/serving_default/logits"], axis=-1),
    )
    probabilities = served["fomaml/serving_default/probabilities"]
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)
    # LEO's latent steps and fine-tuning changed the classifier.
    assert (
        np.abs(
            expected["leo/serving_default/logits"] - expected["leo/predict/logits"]
        ).max()
        > 1e-6
    )


def test_a_query_prediction_does_not_depend_on_the_other_queries(exports, maml_model):
    support_x, support_y, query_x = episode(seed=2, k_shot=1, queries=6)
    serve = maml_model.signatures["serving_default"]
    together = serve(
        support_x=tf.constant(support_x),
        support_y=tf.constant(support_y),
        query_x=tf.constant(query_x),
    )["logits"].numpy()
    for i in range(len(query_x)):
        alone = serve(
            support_x=tf.constant(support_x),
            support_y=tf.constant(support_y),
            query_x=tf.constant(query_x[i : i + 1]),
        )["logits"].numpy()
        np.testing.assert_allclose(alone[0], together[i], rtol=0, atol=1e-5)
    # The property is not trivial: transductive normalization (query batch statistics) breaks it.
    learner = in_memory_learner(exports["maml"], transductive=True)
    fast = learner.adapt(tf.constant(support_x), tf.constant(support_y))
    batch = learner.predict(fast, tf.constant(query_x)).numpy()
    single = learner.predict(fast, tf.constant(query_x[:2])).numpy()
    assert np.abs(batch[:2] - single).max() > 1e-3


def test_metadata_reports_the_meta_test_adaptation(exports):
    for name, steps in (("maml", 3), ("reptile", 50), ("sinusoid", 10)):
        exported = exports[name]
        stored = json.loads((exported.path / METADATA_FILE).read_text())
        assert stored["inner_steps"] == exported.config["eval_inner_steps"] == steps
        assert stored["inner_lr"] == pytest.approx(exported.config["inner_lr"])
        assert stored["algorithm"] == exported.config["algorithm"]
        assert not stored["transductive"] and stored["checkpoint"].startswith(
            "best/ckpt-"
        )
        if name != "reptile":  # the signature returns the stored values
            loaded = tf.saved_model.load(str(exported.path))
            values = {k: v.numpy() for k, v in loaded.signatures["metadata"]().items()}
            assert values["inner_steps"] == steps and not values["transductive"]
            assert values["inner_lr"] == pytest.approx(stored["inner_lr"])
            assert values["algorithm"].decode() == stored["algorithm"]
    maml = json.loads((exports["maml"].path / METADATA_FILE).read_text())
    assert maml["n_way"] == N_WAY and maml["input_shape"] == [28, 28, 1]
    assert maml["inner_optimizer"] == "sgd" and maml["signatures"] == (
        "adapt_and_predict,adapt_and_predict_images,metadata,predict"
    )
    reptile = json.loads((exports["reptile"].path / METADATA_FILE).read_text())
    assert (
        reptile["inner_optimizer"] == "adam" and reptile["eval_inner_batch_size"] == 5
    )


def _call(model, signature, **inputs):
    return model.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})


_SX, _SY, _QX = episode(seed=3, k_shot=1, queries=2)
BAD_TENSOR_REQUESTS = {
    "label out of range": (
        {"support_x": _SX, "support_y": np.array([0, 1, 3], np.int32), "query_x": _QX},
        r"support_y must hold class indices in \[0, 3\)",
    ),
    "negative label": (
        {"support_x": _SX, "support_y": np.array([0, -1, 2], np.int32), "query_x": _QX},
        r"support_y must hold class indices in \[0, 3\)",
    ),
    "class without support": (
        {"support_x": _SX, "support_y": np.array([0, 1, 1], np.int32), "query_x": _QX},
        r"every class 0\.\.2 needs at least one support example",
    ),
    "lengths differ": (
        {
            "support_x": _SX,
            "support_y": np.array([0, 1, 2, 2], np.int32),
            "query_x": _QX,
        },
        "support_x and support_y must have the same length",
    ),
    "image size": (
        {"support_x": _SX[:, :20, :20], "support_y": _SY, "query_x": _QX},
        r"support_x must have shape \[batch, 28, 28, 1\]",
    ),
    "channels": (
        {"support_x": _SX, "support_y": _SY, "query_x": np.repeat(_QX, 3, axis=-1)},
        r"query_x must have shape \[batch, 28, 28, 1\]",
    ),
    "empty query": (
        {"support_x": _SX, "support_y": _SY, "query_x": _QX[:0]},
        "query_x must hold at least one query",
    ),
    "not finite": (
        {
            "support_x": np.where(_SX > 0.5, np.nan, _SX),
            "support_y": _SY,
            "query_x": _QX,
        },
        "support_x must hold finite values",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_TENSOR_REQUESTS))
def test_bad_tensor_request_is_an_invalid_argument(maml_model, case):
    inputs, message = BAD_TENSOR_REQUESTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(maml_model, "serving_default", **inputs)


def _pngs(seed: int, count: int, size: int = 105) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [omniglot_png(rng, size) for _ in range(count)]


_SUPPORT_PNG, _QUERY_PNG = _pngs(4, 3), _pngs(5, 2)
BAD_IMAGE_REQUESTS = {
    "not an image": (
        {
            "support_images": _SUPPORT_PNG,
            "support_y": _SY,
            "query_images": [_QUERY_PNG[0], b"hello"],
        },
        "every element of query_images must be a PNG or JPEG image",
    ),
    "empty query": (
        {
            "support_images": _SUPPORT_PNG,
            "support_y": _SY,
            "query_images": np.array([], object),
        },
        "query_images must hold at least one query image",
    ),
    "lengths differ": (
        {
            "support_images": _SUPPORT_PNG[:2],
            "support_y": _SY,
            "query_images": _QUERY_PNG,
        },
        "support_images and support_y must have the same length",
    ),
    "label out of range": (
        {
            "support_images": _SUPPORT_PNG,
            "support_y": np.array([0, 1, 5], np.int32),
            "query_images": _QUERY_PNG,
        },
        r"support_y must hold class indices in \[0, 3\)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGE_REQUESTS))
def test_bad_image_request_is_an_invalid_argument(maml_model, case):
    inputs, message = BAD_IMAGE_REQUESTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(maml_model, "adapt_and_predict_images", **inputs)


def test_bad_regression_requests_are_invalid_arguments(exports):
    model = tf.saved_model.load(str(exports["sinusoid"].path))
    support_x, support_y, query_x = _sinusoid_episode(2)
    cases = [
        (
            {"support_x": support_x, "support_y": support_y[:3], "query_x": query_x},
            "same length",
        ),
        (
            {"support_x": support_x, "support_y": support_y, "query_x": query_x[:0]},
            "at least one query",
        ),
        (
            {
                "support_x": support_x[:0],
                "support_y": support_y[:0],
                "query_x": query_x,
            },
            "at least one support",
        ),
        (
            {
                "support_x": np.hstack([support_x, support_x]),
                "support_y": support_y,
                "query_x": query_x,
            },
            r"support_x must have shape \[batch, 1\]",
        ),
    ]
    for inputs, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            _call(model, "serving_default", **inputs)


def test_image_signature_equals_tensor_signature_on_training_preprocessing(maml_model):
    support = _pngs(6, N_WAY * 2)
    query = _pngs(7, 3) + [
        _pngs(8, 1, size=64)[0]
    ]  # any size is resized as in training
    support_y = np.repeat(np.arange(N_WAY), 2).astype(np.int32)
    support_x = tf.stack([preprocess_omniglot_image(png, 28) for png in support])
    query_x = tf.stack([preprocess_omniglot_image(png, 28) for png in query])
    # Inverted like training: paper 0.0, strokes close to 1.0.
    assert float(tf.reduce_min(query_x)) == 0.0 and float(tf.reduce_max(query_x)) > 0.99
    tensors = _call(
        maml_model,
        "serving_default",
        support_x=support_x,
        support_y=support_y,
        query_x=query_x,
    )
    images = _call(
        maml_model,
        "adapt_and_predict_images",
        support_images=support,
        support_y=support_y,
        query_images=query,
    )
    np.testing.assert_allclose(images["logits"], tensors["logits"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(images["classes"], tensors["classes"])
    # JPEG bytes take the same path (decoded to gray by the decoder, like PNG).
    jpeg = tf.io.encode_jpeg(tf.io.decode_png(query[0]), quality=95).numpy()
    from_jpeg = _call(
        maml_model,
        "adapt_and_predict_images",
        support_images=support,
        support_y=support_y,
        query_images=[jpeg],
    )
    jpeg_x = preprocess_omniglot_image(jpeg, 28)[tf.newaxis]
    direct = _call(
        maml_model,
        "serving_default",
        support_x=support_x,
        support_y=support_y,
        query_x=jpeg_x,
    )
    np.testing.assert_allclose(from_jpeg["logits"], direct["logits"], rtol=0, atol=1e-6)


def test_folder_decoding_equals_the_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "a/big.png": (rng.integers(0, 256, (40, 50, 3)), "png"),
        "a/small.jpg": (rng.integers(0, 256, (9, 12, 3)), "jpeg"),
        "b/gray.png": (rng.integers(0, 256, (30, 30, 1)), "png"),
    }
    for name, (pixels, kind) in files.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        encode = tf.io.encode_png if kind == "png" else tf.io.encode_jpeg
        path.write_bytes(encode(pixels.astype(np.uint8)).numpy())
    for channels in (1, 3):
        loaded = load_image_folder(tmp_path, image_size=20, channels=channels)
        for index, name in enumerate(sorted(files)):
            decoded = decode_folder_image((tmp_path / name).read_bytes(), 20, channels)
            np.testing.assert_array_equal(
                decoded.numpy(), loaded.images[index], err_msg=name
            )


def _saved_model_cli(*args: str) -> subprocess.CompletedProcess:
    # The `saved_model_cli` console script runs this module's main(); the module
    # form keeps the interpreter (and tensorflow) of the tests.
    return subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _parse_show_all(text: str) -> dict[str, dict[str, dict[str, tuple[str, str]]]]:
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}}} from `saved_model_cli show --all`."""
    signatures: dict = {}
    current = kind = None
    pattern = re.compile(
        r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)"
    )
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        current = block.split("'", 1)[0]
        signatures[current] = {"inputs": {}, "outputs": {}}
        for kind, name, dtype, shape in pattern.findall(block):
            signatures[current][kind][name] = (dtype, shape.strip())
    return signatures


def test_saved_model_cli_shows_the_signatures_and_runs_an_episode(
    exports, maml_model, tmp_path
):
    path = str(exports["maml"].path)
    shown = _saved_model_cli("show", "--dir", path, "--all")
    assert shown.returncode == 0, shown.stderr[-3000:]
    signatures = _parse_show_all(shown.stdout)
    images = ("DT_FLOAT", "(-1, -1, -1, -1)")
    outputs = {
        "logits": ("DT_FLOAT", "(-1, 3)"),
        "probabilities": ("DT_FLOAT", "(-1, 3)"),
        "classes": ("DT_INT32", "(-1)"),
    }
    labels = ("DT_INT32", "(-1)")
    for name in ("serving_default", "adapt_and_predict"):
        assert signatures[name] == {
            "inputs": {"support_x": images, "support_y": labels, "query_x": images},
            "outputs": outputs,
        }
    strings = ("DT_STRING", "(-1)")
    assert signatures["adapt_and_predict_images"] == {
        "inputs": {
            "support_images": strings,
            "support_y": labels,
            "query_images": strings,
        },
        "outputs": outputs,
    }
    assert signatures["predict"] == {
        "inputs": {"support_x": images, "query_x": images},
        "outputs": outputs,
    }
    assert signatures["metadata"]["inputs"] == {}
    assert signatures["metadata"]["outputs"]["inner_steps"] == ("DT_INT64", "()")

    support_x, support_y, query_x = episode(seed=9, k_shot=2, queries=7)
    for name, value in (("sx", support_x), ("sy", support_y), ("qx", query_x)):
        np.save(tmp_path / f"{name}.npy", value)
    inputs = f"support_x={tmp_path}/sx.npy;support_y={tmp_path}/sy.npy;query_x={tmp_path}/qx.npy"
    ran = _saved_model_cli(
        "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
        "--inputs", inputs, "--outdir", str(tmp_path / "out"),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    expected = _call(
        maml_model,
        "serving_default",
        support_x=support_x,
        support_y=support_y,
        query_x=query_x,
    )
    np.testing.assert_array_equal(
        np.load(tmp_path / "out" / "classes.npy"), expected["classes"]
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "logits.npy"), expected["logits"], atol=1e-5
    )


_LSX, _LSY, _LQX = embedding_episode(seed=4, k_shot=2, queries=3)
BAD_LEO_REQUESTS = {
    "label out of range": (
        {"support_y": np.array([0, 0, 1, 1, 2, 3], np.int32)},
        r"support_y must hold class indices in \[0, 3\)",
    ),
    "class without support": (
        {"support_y": np.array([0, 0, 1, 1, 1, 1], np.int32)},
        r"every class 0\.\.2 needs at least one support example",
    ),
    "lengths differ": (
        {"support_y": np.array([0, 1, 2], np.int32)},
        "support_x and support_y must have the same length",
    ),
    "embedding size": (
        {"query_x": _LQX[:, :4]},
        r"query_x must have shape \[batch, 6\]",
    ),
    "empty query": ({"query_x": _LQX[:0]}, "query_x must hold at least one query"),
    "not finite": (
        {"support_x": np.where(_LSX > 1.0, np.inf, _LSX)},
        "support_x must hold finite values",
    ),
}


def test_leo_export_serves_embeddings_with_its_adaptation(exports):
    exported = exports["leo"]
    loaded = tf.saved_model.load(str(exported.path))
    stored = json.loads((exported.path / METADATA_FILE).read_text())
    assert stored["algorithm"] == "leo" and stored["input_shape"] == [6]
    assert stored["n_way"] == N_WAY and stored["signatures"] == (
        "adapt_and_predict,metadata,predict"
    )
    assert stored["inner_steps"] == 2 and stored["finetune_steps"] == 2
    learner = in_memory_learner(exported)
    alpha = learner.model.split_parameters(learner.parameters()).inner_lr
    assert stored["inner_lr"] == pytest.approx(float(tf.reduce_mean(alpha)))
    request = {"support_x": _LSX, "support_y": _LSY, "query_x": _LQX}
    together = _call(loaded, "serving_default", **request)["logits"].numpy()
    # One query alone gets the same prediction (LEO's classifier is linear).
    for i in range(len(_LQX)):
        alone = _call(
            loaded, "serving_default", **{**request, "query_x": _LQX[i : i + 1]}
        )
        np.testing.assert_allclose(alone["logits"].numpy()[0], together[i], atol=1e-5)
    # Any number of examples per class: the same as the learner on that support set.
    support_y = np.array([0, 0, 0, 1, 2, 2], np.int32)
    served = _call(loaded, "serving_default", **{**request, "support_y": support_y})
    fast = learner.adapt(tf.constant(_LSX), tf.constant(support_y))
    np.testing.assert_allclose(
        served["logits"].numpy(),
        learner.predict(fast, tf.constant(_LQX)).numpy(),
        atol=1e-5,
    )


@pytest.mark.parametrize("case", sorted(BAD_LEO_REQUESTS))
@pytest.mark.parametrize("signature", ["serving_default", "predict"])
def test_bad_leo_request_is_an_invalid_argument(exports, case, signature):
    loaded = tf.saved_model.load(str(exports["leo"].path))
    change, message = BAD_LEO_REQUESTS[case]
    request = {"support_x": _LSX, "support_y": _LSY, "query_x": _LQX, **change}
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        _call(loaded, signature, **request)


def test_exports_carry_no_gradient_functions_and_serving_loads_them_quietly(
    exports, caplog
):
    from tensorflow.core.protobuf import saved_model_pb2

    exported = exports["maml"]  # adapts by gradient steps inside its signatures
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((exported.path / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library
    assert library.function and not library.registered_gradients
    with caplog.at_level(logging.WARNING):
        models = LocalModels({"maml": str(exported.export_dir)})
    assert models.versions("maml")
    assert not [r for r in caplog.records if "custom gradients" in r.getMessage()]
    # The filter is gone afterwards: TensorFlow's own warnings still reach users.
    assert not logging.getLogger("absl").filters
