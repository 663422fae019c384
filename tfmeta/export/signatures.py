"""Serving functions of the gradient-based learners: checks, image decoding, signatures.

Every function here runs inside the exported graph. A bad request fails with
an ``InvalidArgumentError`` (from ``tf.debugging.assert_*``) whose message
names the input and what was expected, before any model computation.

TF Serving feeds a request's tensors to the graph without checking them
against the signature's shapes (a wrong image size would run and give
garbage). So float inputs are declared with every dimension dynamic, e.g.
``[None, None, None, None]`` for images (a static size could let graph
optimization fold the check away), and checked here against the trained
shape, which the metadata signature reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import tensorflow as tf

from tfmeta.data.folder import decode_and_resize_image
from tfmeta.data.omniglot import preprocess_omniglot_image
from tfmeta.export.limits import JPEG_SIGNATURE, PNG_SIGNATURE
from tfmeta.export.servable import Servable
from tfmeta.models.batch_norm import has_batch_norm

PREPROCESSINGS = ("omniglot", "folder")
"""The image preprocessings an export's image signature can run (``ImagePreprocessing.kind``)."""
_SHOWN = 64  # values shown in an error message


@dataclasses.dataclass(frozen=True)
class ImagePreprocessing:
    """Turns one encoded PNG/JPEG (a scalar string) into the network input, as in training.

    kind="omniglot": ``preprocess_omniglot_image`` (decode to gray, invert so
    strokes are 1.0, area-resize to ``image_size``), the function the
    Omniglot loaders apply. kind="folder": the ``load_image_folder`` path
    (decode to ``channels``, scale to [0, 1], area resize when shrinking,
    bilinear when enlarging, no inversion).
    """

    kind: str
    image_size: int
    channels: int = 1

    def __post_init__(self):
        if self.kind not in PREPROCESSINGS:
            raise ValueError(
                f"image preprocessing must be one of {PREPROCESSINGS}, got {self.kind!r}"
            )
        if self.kind == "omniglot" and self.channels != 1:
            raise ValueError(
                f"omniglot images have 1 channel, got channels={self.channels}"
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)

    def describe(self) -> str:
        size = f"{self.image_size}x{self.image_size}x{self.channels}"
        if self.kind == "omniglot":
            return (
                f"omniglot: decode to gray, invert (strokes 1.0), area resize to {size}"
            )
        return f"folder: decode to {self.channels} channels, scale to [0, 1], resize to {size}"

    def __call__(self, encoded: tf.Tensor) -> tf.Tensor:
        """Scalar string -> float32 ``[image_size, image_size, channels]``."""
        if self.kind == "omniglot":
            return preprocess_omniglot_image(encoded, self.image_size)
        return decode_folder_image(encoded, self.image_size, self.channels)


def decode_folder_image(
    encoded: tf.Tensor, image_size: int, channels: int
) -> tf.Tensor:
    """The decoding of ``tfmeta.data.folder.load_image_folder`` on bytes:
    float32 ``[image_size, image_size, channels]`` in [0, 1]."""
    return decode_and_resize_image(encoded, (image_size, image_size), channels)


# ------------------------------------------------------------------ checks
def _after(checks: Sequence[tf.Operation], *tensors: tf.Tensor) -> list[tf.Tensor]:
    """``tensors`` that can only be computed once every check has passed."""
    with tf.control_dependencies(checks):
        return [tf.identity(t) for t in tensors]


def check_examples(name: str, x: tf.Tensor, example_shape: Sequence[int]) -> tf.Tensor:
    """Checks ``x`` is ``[batch, *example_shape]`` with finite values; returns it with that static shape."""
    expected = ", ".join(str(d) for d in example_shape)
    checks = [
        tf.debugging.assert_equal(
            tf.shape(x)[1:],
            tf.constant(example_shape, tf.int32),
            message=f"{name} must have shape [batch, {expected}] (the trained input shape); "
            f"its trailing dimensions differ",
        ),
    ]
    with tf.control_dependencies(checks):
        checks.append(
            tf.debugging.assert_all_finite(x, f"{name} must hold finite values")
        )
    (x,) = _after(checks, x)
    return tf.ensure_shape(x, [None, *example_shape])


def check_not_empty(name: str, x: tf.Tensor, what: str) -> tf.Operation:
    return tf.debugging.assert_positive(
        tf.shape(x)[0], message=f"{name} must hold at least one {what}"
    )


def check_same_length(
    names: tuple[str, str], a: tf.Tensor, b: tf.Tensor
) -> tf.Operation:
    return tf.debugging.assert_equal(
        tf.shape(a)[0],
        tf.shape(b)[0],
        message=f"{names[0]} and {names[1]} must have the same length (one label per support example)",
    )


def check_labels(support_y: tf.Tensor, n_way: int) -> list[tf.Operation]:
    """Labels in [0, N) and every class 0..N-1 present at least once."""
    in_range = [
        tf.debugging.assert_non_negative(
            support_y,
            message=f"support_y must hold class indices in [0, {n_way})",
            summarize=_SHOWN,
        ),
        tf.debugging.assert_less(
            support_y,
            tf.constant(n_way, support_y.dtype),
            message=f"support_y must hold class indices in [0, {n_way}) (the trained N-way)",
            summarize=_SHOWN,
        ),
    ]
    with tf.control_dependencies(in_range):
        counts = tf.math.bincount(support_y, minlength=n_way, maxlength=n_way)
        every_class = tf.debugging.assert_positive(
            counts,
            message=f"every class 0..{n_way - 1} needs at least one support example "
            "(x: support examples per class)",
            summarize=n_way,
        )
    return [*in_range, every_class]


def decode_images(
    name: str, encoded: tf.Tensor, preprocessing: ImagePreprocessing
) -> tf.Tensor:
    """``[batch]`` PNG/JPEG strings -> float32 ``[batch, *preprocessing.image_shape]``.

    Two images are decoded at a time: a decoded image holds height x width x
    channels bytes, and as many floats, until it is resized (the export's
    ``limits.check_images`` bounds height x width before this runs).
    """
    is_png = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    is_jpeg = tf.equal(
        tf.strings.substr(encoded, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE
    )
    check = tf.debugging.assert_equal(
        tf.logical_or(is_png, is_jpeg),
        True,
        message=f"every element of {name} must be a PNG or JPEG image (x: false where it is not)",
        summarize=_SHOWN,
    )
    (encoded,) = _after([check], encoded)
    return tf.map_fn(
        preprocessing,
        encoded,
        fn_output_signature=tf.TensorSpec(preprocessing.image_shape, tf.float32),
        parallel_iterations=2,
    )


# -------------------------------------------------------------- signatures
def batch_spec(name: str, rank: int) -> tf.TensorSpec:
    """float32 of the given rank, every dimension dynamic (checked in the graph)."""
    return tf.TensorSpec([None] * rank, tf.float32, name=name)


def classification_outputs(logits: tf.Tensor) -> dict[str, tf.Tensor]:
    """logits ``[Q, N]`` -> {"logits", "probabilities" ``[Q, N]``, "classes" int32 ``[Q]``}."""
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
    }


def uses_batch_statistics(learner: Servable) -> bool:
    """Whether outputs depend on the batch (normalization layers computing statistics)."""
    return has_batch_norm(learner.model)


def adaptation_signatures(
    learner: Servable, preprocessing: ImagePreprocessing | None
) -> dict[str, Callable]:
    """The "adapt, then predict" signatures of an N-way classifier of inputs
    ``[batch, H, W, C]`` (N: ``learner.model.output_shape[-1]``), through
    ``learner.served_outputs(support_x, support_y, query_x)`` only (the
    function evaluation reports), whatever the learner adapts (fast weights
    theta', prototypes c_k):

    * ``adapt_and_predict`` (also ``serving_default``): ``support_x``
      float32 ``[S, H, W, C]``, ``support_y`` int32 ``[S]`` in [0, N),
      ``query_x`` ``[Q, H, W, C]`` -> ``logits``, ``probabilities`` ``[Q, N]``,
      ``classes`` int32 ``[Q]``, after the learner's meta-test adaptation.
    * ``adapt_and_predict_images`` (with ``preprocessing``): the same from
      ``support_images`` / ``query_images``, string ``[S]`` / ``[Q]`` of PNG
      or JPEG bytes.
    """
    example_shape = tuple(learner.model.input_shape[1:])
    n_way = int(learner.model.output_shape[-1])
    if preprocessing is not None and preprocessing.image_shape != example_shape:
        raise ValueError(
            f"image preprocessing gives {preprocessing.image_shape} images but the model "
            f"takes {example_shape}"
        )

    def adapt_and_predict_checked(support_x, support_y, query_x):
        checks = [
            check_same_length(("support_x", "support_y"), support_x, support_y),
            check_not_empty("query_x", query_x, "query"),
            *check_labels(support_y, n_way),
        ]
        support_x, support_y, query_x = _after(checks, support_x, support_y, query_x)
        support_x = check_examples("support_x", support_x, example_shape)
        query_x = check_examples("query_x", query_x, example_shape)
        return classification_outputs(
            learner.served_outputs(support_x, support_y, query_x)
        )

    @tf.function(
        input_signature=[
            batch_spec("support_x", len(example_shape) + 1),
            tf.TensorSpec([None], tf.int32, name="support_y"),
            batch_spec("query_x", len(example_shape) + 1),
        ]
    )
    def adapt_and_predict(support_x, support_y, query_x):
        return adapt_and_predict_checked(support_x, support_y, query_x)

    signatures = {"adapt_and_predict": adapt_and_predict}

    if preprocessing is not None:

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.string, name="support_images"),
                tf.TensorSpec([None], tf.int32, name="support_y"),
                tf.TensorSpec([None], tf.string, name="query_images"),
            ]
        )
        def adapt_and_predict_images(support_images, support_y, query_images):
            checks = [
                check_same_length(
                    ("support_images", "support_y"), support_images, support_y
                ),
                check_not_empty("query_images", query_images, "query image"),
                *check_labels(support_y, n_way),
            ]
            support_images, query_images = _after(checks, support_images, query_images)
            support_x = decode_images("support_images", support_images, preprocessing)
            query_x = decode_images("query_images", query_images, preprocessing)
            return adapt_and_predict_checked(support_x, support_y, query_x)

        signatures["adapt_and_predict_images"] = adapt_and_predict_images
    return signatures


def classification_signatures(
    learner: Servable, preprocessing: ImagePreprocessing | None
) -> dict[str, Callable]:
    """Signatures of an N-way classifier ``[batch, H, W, C] -> [batch, N]``
    whose adapted state is fast weights theta' over its model:
    ``adaptation_signatures`` (after ``learner.eval_inner_steps`` inner
    steps) and

    * ``predict``: theta without adaptation on ``query_x`` (and ``support_x``
      for the normalization statistics when the learner is not transductive
      and the model normalizes).
    """
    signatures = adaptation_signatures(learner, preprocessing)
    example_shape = tuple(learner.model.input_shape[1:])
    if not learner.transductive and uses_batch_statistics(learner):

        @tf.function(
            input_signature=[
                batch_spec("support_x", len(example_shape) + 1),
                batch_spec("query_x", len(example_shape) + 1),
            ]
        )
        def predict(support_x, query_x):
            (support_x, query_x) = _after(
                [
                    check_not_empty("support_x", support_x, "support example"),
                    check_not_empty("query_x", query_x, "query"),
                ],
                support_x,
                query_x,
            )
            support_x = check_examples("support_x", support_x, example_shape)
            query_x = check_examples("query_x", query_x, example_shape)
            logits = learner.predict(learner.parameters(), query_x, support_x, 0)
            return classification_outputs(logits)

    else:

        @tf.function(input_signature=[batch_spec("query_x", len(example_shape) + 1)])
        def predict(query_x):
            (query_x,) = _after([check_not_empty("query_x", query_x, "query")], query_x)
            query_x = check_examples("query_x", query_x, example_shape)
            logits = learner.predict(learner.parameters(), query_x, None, 0)
            return classification_outputs(logits)

    signatures["predict"] = predict
    return signatures


def regression_signatures(
    learner: Servable, preprocessing: ImagePreprocessing | None
) -> dict[str, Callable]:
    """Signatures of a regressor ``[batch, d_in] -> [batch, d_out]`` (sinusoid: 1 -> 1).

    * ``adapt_and_predict`` (also ``serving_default``): ``support_x``
      float32 ``[S, d_in]``, ``support_y`` ``[S, d_out]``, ``query_x``
      ``[Q, d_in]`` -> ``y`` ``[Q, d_out]`` after ``eval_inner_steps``.
    * ``predict``: ``query_x`` -> ``y`` under theta, without adaptation.
    """
    if preprocessing is not None:
        raise ValueError("image preprocessing applies to classification learners only")
    input_shape = tuple(learner.model.input_shape[1:])
    output_shape = tuple(learner.model.output_shape[1:])
    if uses_batch_statistics(learner):
        raise ValueError(
            "regression export supports models without batch normalization"
        )

    @tf.function(
        input_signature=[
            batch_spec("support_x", len(input_shape) + 1),
            batch_spec("support_y", len(output_shape) + 1),
            batch_spec("query_x", len(input_shape) + 1),
        ]
    )
    def adapt_and_predict(support_x, support_y, query_x):
        checks = [
            check_not_empty("support_x", support_x, "support point"),
            check_same_length(("support_x", "support_y"), support_x, support_y),
            check_not_empty("query_x", query_x, "query point"),
        ]
        support_x, support_y, query_x = _after(checks, support_x, support_y, query_x)
        support_x = check_examples("support_x", support_x, input_shape)
        support_y = check_examples("support_y", support_y, output_shape)
        query_x = check_examples("query_x", query_x, input_shape)
        return {"y": learner.served_outputs(support_x, support_y, query_x)}

    @tf.function(input_signature=[batch_spec("query_x", len(input_shape) + 1)])
    def predict(query_x):
        (query_x,) = _after(
            [check_not_empty("query_x", query_x, "query point")], query_x
        )
        query_x = check_examples("query_x", query_x, input_shape)
        return {"y": learner.forward(learner.parameters(), query_x)}

    return {"adapt_and_predict": adapt_and_predict, "predict": predict}
