"""The in-memory dataset type shared by every loader, and seeded subsampling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class DatasetError(ValueError):
    """A user-facing data problem; the message says what is wrong and how to fix it."""


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set held in memory.

    Attributes:
        images: uint8 array of shape (N, H, W, C) with C = 1 (grayscale) or 3 (RGB).
        labels: int64 array of shape (N,), values in 0..len(classes)-1.
        classes: class names; ``labels == i`` means ``classes[i]``.

    ``eq=False`` because element-wise array comparison has no single truth value;
    instances compare (and hash) by identity.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_images(self.images)
        _check_classes(self.classes)
        _check_labels(self.labels, len(self.images), len(self.classes))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)


def _check_images(images: object) -> None:
    if not isinstance(images, np.ndarray):
        raise DatasetError(f"images must be a numpy array, got {type(images).__name__}.")
    if images.dtype != np.uint8:
        raise DatasetError(
            f"images must have dtype uint8, got {images.dtype}; "
            "convert with np.clip(x, 0, 255).astype(np.uint8) after scaling to 0..255."
        )
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DatasetError(
            f"images must have shape (N, H, W, C) with C = 1 or 3, got {images.shape}; "
            "add a trailing channel axis to grayscale images (x[..., None])."
        )


def _check_classes(classes: object) -> None:
    if not isinstance(classes, tuple) or not all(isinstance(c, str) for c in classes):
        raise DatasetError(f"classes must be a tuple of str, got {classes!r}.")
    if not classes:
        raise DatasetError("classes is empty; a dataset needs at least one class name.")


def _check_labels(labels: object, n_images: int, n_classes: int) -> None:
    if not isinstance(labels, np.ndarray):
        raise DatasetError(f"labels must be a numpy array, got {type(labels).__name__}.")
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise DatasetError(
            f"labels must be an int64 array of shape (N,), got {labels.dtype} of shape {labels.shape}; "
            "use labels.ravel().astype(np.int64)."
        )
    if len(labels) != n_images:
        raise DatasetError(
            f"labels has {len(labels)} entries but images has {n_images}; they must match one to one."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetError(
            f"labels must lie in 0..{n_classes - 1} (one per class name), "
            f"got values from {labels.min()} to {labels.max()}."
        )


def stratified_subsample(dataset: ImageDataset, n: int, seed: int) -> ImageDataset:
    """Return a seeded random subset of ``n`` samples that keeps the class proportions.

    Per-class counts follow the largest-remainder rule, then every class present in
    ``dataset`` is given at least one sample. The result is in shuffled order.
    ``n >= len(dataset)`` returns the whole dataset, shuffled with the same seed.

    Raises:
        DatasetError: if ``n`` is smaller than the number of classes present.
    """
    rng = np.random.default_rng(seed)
    present, counts = np.unique(dataset.labels, return_counts=True)
    if n < len(present):
        raise DatasetError(
            f"cannot draw a stratified subsample of {n} from {len(present)} classes; "
            f"ask for at least {len(present)} samples."
        )
    if n >= len(dataset):
        order = rng.permutation(len(dataset))
    else:
        quota = _allocate(counts, n)
        picks = [
            rng.choice(np.flatnonzero(dataset.labels == label), size=k, replace=False)
            for label, k in zip(present, quota)
        ]
        order = rng.permutation(np.concatenate(picks))
    return ImageDataset(dataset.images[order], dataset.labels[order], dataset.classes)


def stratified_split(dataset: ImageDataset, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """Split ``dataset`` into (rest, held out) with a seeded stratified ``fraction`` held out.

    Raises:
        DatasetError: if the held-out part or the rest would miss a class.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(dataset))
    try:
        rest, held_out = train_test_split(index, test_size=fraction, stratify=dataset.labels, random_state=seed)
    except ValueError as error:
        raise DatasetError(f"cannot hold out a stratified {fraction} of {len(dataset)} samples: {error}") from error
    pick = lambda i: ImageDataset(dataset.images[i], dataset.labels[i], dataset.classes)  # noqa: E731
    return pick(rest), pick(held_out)


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n < counts.sum()`` over classes proportionally to ``counts``, each class >= 1."""
    exact = counts * n / counts.sum()
    quota = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - quota), kind="stable")
    quota[by_remainder[: n - quota.sum()]] += 1
    for empty in np.flatnonzero(quota == 0):
        quota[np.argmax(quota)] -= 1
        quota[empty] = 1
    return quota
