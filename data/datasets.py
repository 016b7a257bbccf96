"""``load_splits``: one entry point for every supported dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .core import DatasetError, ImageDataset
from .image_folder import load_image_folders
from .torchvision_sets import load_torchvision

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "image_folder")


def load_splits(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    download: bool = False,
    train_root: str | None = None,
    test_root: str | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
) -> tuple[ImageDataset, ImageDataset]:
    """Return (train, test) ImageDatasets of dataset ``name`` (one of ``DATASETS``).

    - ``digits``: scikit-learn's bundled 8x8 digits, (N, 8, 8, 1), split here with a
      stratified, ``seed``-ed ``test_fraction`` split; ``root`` and ``download`` are unused.
    - ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's official splits under
      ``root`` (fetched there first when ``download``).
    - ``image_folder``: ``train_root`` and ``test_root`` ImageFolder trees, relative ones
      taken relative to ``root`` when it is given. Samples are sorted by class.

    ``test_fraction`` and ``seed`` only affect ``digits``.

    Raises:
        DatasetError: unknown name, missing/incomplete/corrupt data, inconsistent images.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}.")
    if name == "digits":
        return _load_digits(test_fraction, seed)
    if name == "image_folder":
        train_dir = _split_dir("train_root", train_root, root)
        return load_image_folders(train_dir, _split_dir("test_root", test_root, root))
    if root is None:
        raise DatasetError(
            f"dataset {name!r} needs a data root: pass --data-root (the folder that holds its files)."
        )
    return load_torchvision(name, Path(root).expanduser(), download)


def _split_dir(option: str, path: str | None, root: str | os.PathLike | None) -> Path:
    """Resolve one image_folder split directory, relative to ``root`` when given."""
    if path is None:
        raise DatasetError(
            f"dataset 'image_folder' needs {option}: "
            f"set data.{option} to a folder with one sub-folder per class."
        )
    path = Path(path).expanduser()
    return path if root is None or path.is_absolute() else Path(root).expanduser() / path


def _load_digits(test_fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """scikit-learn digits as uint8 (N, 8, 8, 1) (0..16 scaled to 0..255), stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
    digits = load_digits()
    images = np.round(digits.images * 255 / 16).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    classes = tuple(str(c) for c in digits.target_names)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return ImageDataset(x_train, y_train, classes), ImageDataset(x_test, y_test, classes)
