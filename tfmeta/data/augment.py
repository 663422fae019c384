"""Small random affine distortions of images: of meta-training images
(augmentation), and of a task's support set at evaluation and serving
(``with_support_copies``).

Each image gets its own affine map about its centre: a rotation, a shear, a
scale per axis and a shift, each drawn uniformly within ``strength`` times
``MAXIMA`` (at strength 1: up to 10 degrees, shear 0.1, scale 0.9-1.1, a
shift of 10% of the side), from a stateless seed, so a task's images are the
same whenever it is drawn again (resume, replay). Sampling happens before the
transform: pixels outside the image are filled with 0 (Omniglot's paper
after inversion). One op for the batch (``ImageProjectiveTransformV3``, on CPU
and GPU alike).

Copies at evaluation and serving (test-time augmentation): each support
example, or each query, is joined by ``copies`` distorted versions under maps
drawn once from a fixed seed, so an answer is the same for the same request;
a query's copies are its own, so each query is still answered independently
of the others.
"""

from __future__ import annotations

import math

import tensorflow as tf

# At strength 1: rotation (radians), shear, log-scale per axis, shift (fraction of the side).
MAXIMA = {
    "rotation": math.radians(10.0),
    "shear": 0.1,
    "log_scale": math.log(1.1),
    "shift": 0.1,
}
MAX_STRENGTH = 3.0


def check_strength(strength: float) -> None:
    if not isinstance(strength, (int, float)) or isinstance(strength, bool):
        raise ValueError(  # noqa: TRY004 (the binaries show ValueErrors as one line)
            f"augment must be a number in [0, {MAX_STRENGTH}], got {strength!r}"
        )
    if not 0.0 <= strength <= MAX_STRENGTH:
        raise ValueError(f"augment must be in [0, {MAX_STRENGTH}], got {strength}")


def affine_matrices(
    count: int | tf.Tensor, seed: tf.Tensor, strength: float
) -> tf.Tensor:
    """``[count, 2, 3]`` forward maps ``p_out = A (p_in - c) + c + t`` in
    units of the side (A in the first two columns, t in the last)."""
    draws = tf.random.stateless_uniform([count, 6], seed=seed, minval=-1.0, maxval=1.0)
    angle = draws[:, 0] * MAXIMA["rotation"] * strength
    shear = draws[:, 1] * MAXIMA["shear"] * strength
    scale_x = tf.exp(draws[:, 2] * MAXIMA["log_scale"] * strength)
    scale_y = tf.exp(draws[:, 3] * MAXIMA["log_scale"] * strength)
    shift = draws[:, 4:6] * MAXIMA["shift"] * strength
    cos, sin = tf.cos(angle), tf.sin(angle)
    # A = rotation @ shear @ scale
    a00 = cos * scale_x
    a01 = (cos * shear - sin) * scale_y
    a10 = sin * scale_x
    a11 = (sin * shear + cos) * scale_y
    rows = tf.stack(
        [
            tf.stack([a00, a01, shift[:, 0]], axis=1),
            tf.stack([a10, a11, shift[:, 1]], axis=1),
        ],
        axis=1,
    )
    return rows


def distort(images: tf.Tensor, seed: tf.Tensor, strength: float) -> tf.Tensor:
    """``images [n, H, W, C]`` float, each under its own random affine map
    (``strength`` 0: unchanged)."""
    if strength == 0.0:
        return images
    return transform(images, affine_matrices(tf.shape(images)[0], seed, strength))


def transform(images: tf.Tensor, forward: tf.Tensor) -> tf.Tensor:
    """``images [n, H, W, C]``, image i under the forward map ``forward[i]``
    (``[n, 2, 3]`` as ``affine_matrices`` gives), bilinear, 0 outside."""
    height, width = images.shape[1], images.shape[2]
    a00, a01, tx = forward[:, 0, 0], forward[:, 0, 1], forward[:, 0, 2] * width
    a10, a11, ty = forward[:, 1, 0], forward[:, 1, 1], forward[:, 1, 2] * height
    # The op maps each output pixel to the input point it samples:
    # p_in = A^-1 (p_out - c - t) + c.
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    ox, oy = cx + tx, cy + ty
    b0 = cx - (i00 * ox + i01 * oy)
    b1 = cy - (i10 * ox + i11 * oy)
    zeros = tf.zeros_like(i00)
    transforms = tf.stack([i00, i01, b0, i10, i11, b1, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.cast(transforms, tf.float32),
        output_shape=tf.constant([height, width], tf.int32),
        fill_value=tf.constant(0.0, images.dtype),
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


# The seed of the copies' maps: fixed, so a request always gets the same answer.
COPIES_SEED = (20, 26)
MAX_COPIES = 64


def check_copies(kind: str, copies: int, strength: float) -> None:
    """ValueError naming ``<kind>_copies`` or ``<kind>_augment`` (kind:
    "support" or "query") for copies outside [0, 64] or a strength outside
    (0, 3]."""
    if isinstance(copies, bool) or not isinstance(copies, int):
        raise ValueError(  # noqa: TRY004 (the binaries show ValueErrors as one line)
            f"{kind}_copies must be an integer, got {copies!r}"
        )
    if not 0 <= copies <= MAX_COPIES:
        raise ValueError(f"{kind}_copies must be in [0, {MAX_COPIES}], got {copies}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise ValueError(  # noqa: TRY004 (the binaries show ValueErrors as one line)
            f"{kind}_augment must be a number in (0, {MAX_STRENGTH}], got {strength!r}"
        )
    if not 0.0 < strength <= MAX_STRENGTH:
        raise ValueError(
            f"{kind}_augment must be in (0, {MAX_STRENGTH}], got {strength}"
        )


def distorted_copies(images: tf.Tensor, copies: int, strength: float) -> tf.Tensor:
    """``images [n, ...]`` followed by ``copies`` distorted copies of them,
    ``[(copies + 1) * n, ...]``: copy j puts every image under the same
    affine map j (drawn once from a fixed seed at ``strength``), so image i's
    copies do not depend on the others or their order. ``copies`` 0: the
    images unchanged."""
    if copies == 0:
        return images
    seed = tf.constant(COPIES_SEED, tf.int64)
    forward = tf.cast(affine_matrices(copies, seed, strength), images.dtype)
    count = tf.shape(images)[0]
    maps = tf.repeat(forward, count, axis=0)  # copy-major, as the tiled images
    copied = transform(tf.tile(images, [copies, 1, 1, 1]), maps)
    return tf.concat([images, copied], axis=0)


def with_support_copies(
    support_x: tf.Tensor, support_y: tf.Tensor, copies: int, strength: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """The support set followed by ``copies`` distorted copies of it
    (``distorted_copies``), labels repeated."""
    if copies == 0:
        return support_x, support_y
    return (
        distorted_copies(support_x, copies, strength),
        tf.tile(support_y, [copies + 1]),
    )
