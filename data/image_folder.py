"""Datasets stored as ``<split_dir>/<class_name>/<image file>`` trees (torchvision ImageFolder layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .core import DatasetError, ImageDataset

_LAYOUT = "expected layout: <folder>/<class_name>/<image>.png|.jpg|..., one sub-folder per class"
# The formats of the image suffixes that are read (torchvision's IMG_EXTENSIONS): Pillow picks a decoder
# by content, so without this list a PostScript file named .png would reach Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "PPM", "TIFF", "WEBP")
_MODE_NAMES = {"1": "1-bit black-and-white", "L": "grayscale", "LA": "grayscale with alpha", "I;16": "16-bit grayscale",
               "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale", "I": "32-bit grayscale",
               "F": "floating-point grayscale", "P": "palette", "PA": "palette with alpha", "RGB": "RGB",
               "RGBA": "RGB with alpha", "CMYK": "CMYK", "YCbCr": "YCbCr"}


def load_image_folders(train_dir: Path, test_dir: Path) -> tuple[ImageDataset, ImageDataset]:
    """Read every image of two ImageFolder trees into (train, test) ImageDatasets.

    Images are uint8 (N, H, W, C): mode "L" files give C = 1, "RGB" files C = 3 and any
    other mode ("RGBA", "P", ...) is converted to RGB. All images of both splits must
    share one (H, W, C). Classes are the train folder's sub-folder names, sorted; the
    test folder must have the same ones. Samples come out sorted by class, then by path
    (ImageFolder order), not shuffled: shuffle later, e.g. with ``stratified_subsample``.
    """
    train_classes, train_samples = _scan(train_dir)
    test_classes, test_samples = _scan(test_dir)
    if train_classes != test_classes:
        raise DatasetError(
            f"class folders differ between {train_dir} and {test_dir}: "
            f"only in train {sorted(set(train_classes) - set(test_classes))}, "
            f"only in test {sorted(set(test_classes) - set(train_classes))}. "
            "Give both splits the same class sub-folders."
        )
    train, test = (_read_split(samples, train_classes) for samples in (train_samples, test_samples))
    if train.image_shape != test.image_shape:
        raise DatasetError(
            f"train images ({train_dir}) are {_describe(train.image_shape)} but test images ({test_dir}) are "
            f"{_describe(test.image_shape)}; both splits must share one image size and channel count."
        )
    return train, test


def _scan(directory: Path) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """Return (class names, [(path, label), ...]) of one ImageFolder tree."""
    if not directory.is_dir():
        raise DatasetError(f"image folder {directory} does not exist or is not a directory ({_LAYOUT}).")
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(directory))
    except FileNotFoundError as err:  # no class folders, or a class folder without images
        raise DatasetError(f"image folder {directory}: {str(err).rstrip('.')} ({_LAYOUT}); add images to "
                           "every class folder or delete the empty ones.") from err
    except OSError as err:  # an unreadable folder (permissions, a broken mount)
        raise DatasetError(f"cannot read image folder {directory}: {err.strerror} ({err.filename}); give this "
                           "user read access to the folder (chmod -R u+rX) or copy the images elsewhere.") from err
    return tuple(folder.classes), folder.samples


def _read_split(samples: list[tuple[str, int]], classes: tuple[str, ...]) -> ImageDataset:
    """Decode ``samples`` into one uint8 (N, H, W, C) array; every image must match the first."""
    paths = [path for path, _ in samples]
    first = _read_image(paths[0])
    images = np.empty((len(paths), *first.shape), dtype=np.uint8)
    progress = tqdm(paths, desc="reading images", unit="img", disable=True if len(paths) <= 1000 else None)
    for i, path in enumerate(progress):
        image = _read_image(path)
        if image.shape != first.shape:
            raise DatasetError(
                f"{path} is {_describe(image.shape)} but {paths[0]} is {_describe(first.shape)}; all images "
                "must share one size and channel count: resize or convert the odd ones out."
            )
        images[i] = image
    labels = np.array([label for _, label in samples], dtype=np.int64)
    return ImageDataset(images, labels, classes)


def _read_image(path: str) -> np.ndarray:
    """Decode one file to uint8 (H, W, 1) for mode "L", else (H, W, 3)."""
    return _read_image_and_mode(path)[0]


def _read_image_and_mode(path: str) -> tuple[np.ndarray, str]:
    """``(pixels, mode)``: one file of an ``IMAGE_FORMATS`` format decoded as in ``_read_image``, and
    the Pillow mode of the file ("1", "L", "I;16", "P", "RGB", ...)."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            mode = image.mode
            pixels = np.asarray(image if mode in ("L", "RGB") else image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"cannot read image {path}: {err} (formats read: {', '.join(IMAGE_FORMATS)}). "
                           "Replace or delete this file.") from err
    return (pixels[..., None] if pixels.ndim == 2 else pixels), mode


def _describe(shape: tuple[int, ...], mode: str | None = None) -> str:
    """'WxH grayscale' or 'WxH RGB' for an (H, W, C) shape; with the file's Pillow ``mode`` when it was
    converted to RGB, e.g. 'WxH 16-bit grayscale (mode I;16, read as RGB)'."""
    height, width, channels = shape
    if mode is None or mode in ("L", "RGB"):
        return f"{width}x{height} {'grayscale' if channels == 1 else 'RGB'}"
    return f"{width}x{height} {_MODE_NAMES.get(mode, 'image')} (mode {mode}, read as RGB)"
