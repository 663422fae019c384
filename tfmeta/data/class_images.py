"""Images of a set of classes, decoded once and held in memory.

`ClassImages` is the one in-memory format every image loader of `tfmeta.data`
produces (Omniglot, a generic `<root>/<class>/<image>` folder) and the one
`episodes.episode_dataset` samples N-way K-shot tasks from. All images of all
classes live in a single array; class `c` owns the contiguous slice
`images[class_offsets[c]:class_offsets[c + 1]]`, so classes may hold different
numbers of images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def check_decoded_size(
    count: int, shape: Sequence[int], max_bytes: int | None, source: str
) -> None:
    """Raises ValueError, before any decoding, where ``count`` float32 images
    of ``shape`` need more than ``max_bytes`` (None: no limit)."""
    needed = count * int(np.prod(shape)) * 4
    if max_bytes is not None and needed > max_bytes:
        raise ValueError(
            f"image_size={shape[0]}: the {count} images of {source} decoded to "
            f"{'x'.join(str(int(n)) for n in shape)} need {needed / 2**30:.1f} GiB "
            f"of memory, more than the {max_bytes / 2**30:.1f} GiB available"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ClassImages:
    """Images of a set of classes held in memory, decoded once.

    Attributes:
      images: float32 `[total_images, H, W, C]`, the images of every class,
        class after class; or feature vectors `[total_images, d]` (e.g. the
        embeddings of `tfmeta.data.embeddings`).
      class_offsets: int64 `[num_classes + 1]`, starting at 0 and ending at
        `total_images`; the images of class `c` are
        `images[class_offsets[c]:class_offsets[c + 1]]`. Every class holds at
        least one image.
      class_names: `num_classes` distinct names, e.g. `"Greek/character01"`.

    Equality is identity (`eq=False`): the fields are arrays.
    """

    images: np.ndarray
    class_offsets: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        if images.dtype != np.float32:
            raise TypeError(f"images must be float32, got dtype {images.dtype}.")
        if images.ndim not in (2, 4):
            raise ValueError(
                "images must have shape [total_images, H, W, C] (or [total_images, d] "
                f"for feature vectors), got shape {images.shape}."
            )
        offsets = np.asarray(self.class_offsets)
        if offsets.ndim != 1 or not np.issubdtype(offsets.dtype, np.integer):
            raise ValueError(
                "class_offsets must be a 1-D integer array [num_classes + 1], got "
                f"shape {offsets.shape} and dtype {offsets.dtype}."
            )
        offsets = offsets.astype(np.int64)
        names = tuple(self.class_names)
        if len(offsets) != len(names) + 1:
            raise ValueError(
                f"class_offsets must have num_classes + 1 = {len(names) + 1} entries "
                f"for {len(names)} class names, got {len(offsets)}."
            )
        if offsets[0] != 0 or offsets[-1] != len(images):
            raise ValueError(
                "class_offsets must start at 0 and end at total_images = "
                f"{len(images)}, got {offsets[0]} ... {offsets[-1]}."
            )
        counts = np.diff(offsets)
        if np.any(counts < 1):
            empty = names[int(np.argmax(counts < 1))]
            raise ValueError(
                f"Every class needs at least one image; class {empty!r} has "
                f"{int(counts.min())} (class_offsets must be strictly increasing)."
            )
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(
                f"class_names must be distinct, got duplicates {duplicates}."
            )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "class_offsets", offsets)
        object.__setattr__(self, "class_names", names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def images_per_class(self) -> np.ndarray:
        """int64 `[num_classes]`: how many images each class holds."""
        return np.diff(self.class_offsets)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """`(H, W, C)` of every image, or `(d,)` for feature vectors."""
        return tuple(int(size) for size in self.images.shape[1:])

    def images_of(self, class_index: int) -> np.ndarray:
        """Returns the images of one class, float32 `[n_c, H, W, C]` (a view)."""
        if not 0 <= class_index < self.num_classes:
            raise IndexError(
                f"class_index {class_index} is out of range [0, {self.num_classes})."
            )
        start, stop = (
            self.class_offsets[class_index],
            self.class_offsets[class_index + 1],
        )
        return self.images[start:stop]

    def subset(self, class_indices: Sequence[int] | np.ndarray) -> ClassImages:
        """Returns the classes `class_indices`, in that order, as a new `ClassImages`.

        Args:
          class_indices: distinct integers in `[0, num_classes)`.

        Returns:
          A `ClassImages` whose class `i` is class `class_indices[i]` of `self`
          (images copied).
        """
        indices = np.asarray(class_indices)
        if indices.ndim != 1 or (
            indices.size and not np.issubdtype(indices.dtype, np.integer)
        ):
            raise ValueError(
                f"class_indices must be a 1-D sequence of integers, got {class_indices!r}."
            )
        bad = indices[(indices < 0) | (indices >= self.num_classes)]
        if bad.size:
            raise IndexError(
                f"class_indices {bad.tolist()} are out of range [0, {self.num_classes})."
            )
        if len(np.unique(indices)) != len(indices):
            raise ValueError(f"class_indices must be distinct, got {indices.tolist()}.")
        return ClassImages.from_list(
            [self.class_names[i] for i in indices],
            [self.images_of(int(i)) for i in indices],
            image_shape=self.image_shape,
        )

    @staticmethod
    def from_list(
        names: Sequence[str],
        arrays: Sequence[np.ndarray],
        image_shape: tuple[int, int, int] | None = None,
    ) -> ClassImages:
        """Builds a `ClassImages` from one image array per class.

        Args:
          names: `num_classes` distinct class names.
          arrays: `num_classes` arrays `[n_c, H, W, C]` with `n_c >= 1` and the
            same `(H, W, C)`; converted to float32.
          image_shape: `(H, W, C)` of an empty result (no classes); ignored
            otherwise. Defaults to `(1, 1, 1)`.

        Returns:
          The classes in the given order, images concatenated into one array.
        """
        names = list(names)
        if len(names) != len(arrays):
            raise ValueError(
                f"Got {len(names)} class names but {len(arrays)} image arrays; "
                "expected one array per name."
            )
        if not arrays:
            shape = tuple(image_shape) if image_shape is not None else (1, 1, 1)
            return ClassImages(
                images=np.zeros((0, *shape), np.float32),
                class_offsets=np.zeros([1], np.int64),
                class_names=(),
            )
        arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
        for name, array in zip(names, arrays):
            if array.ndim not in (2, 4) or array.shape[1:] != arrays[0].shape[1:]:
                raise ValueError(
                    f"Images of class {name!r} have shape {array.shape}; expected "
                    f"[n, H, W, C] with (H, W, C) = {arrays[0].shape[1:]} like class "
                    f"{names[0]!r}."
                )
        counts = np.array([len(a) for a in arrays], np.int64)
        return ClassImages(
            images=np.concatenate(arrays, axis=0),
            class_offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            class_names=tuple(names),
        )
