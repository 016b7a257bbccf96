"""Images a user wants classified: list them and read them at the model's input shape."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from .core import DatasetError
from .image_folder import _describe, _read_image_and_mode

IMAGE_SUFFIXES: tuple[str, ...] = tuple(suffix.lower() for suffix in IMG_EXTENSIONS)
_ACCEPTED = f"accepted suffixes (any case): {' '.join(IMAGE_SUFFIXES)}"
_MAX_LISTED_MISMATCHES = 5


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def list_image_files(path: Path | str) -> list[Path]:
    """The image files at ``path``: the file itself, or every image file under the folder.

    A folder is searched recursively (so an ImageFolder tree ``path/<class>/<image>`` works),
    skipping hidden files and folders (name starting with "."), files without an image suffix
    and anything that is not a regular file (a FIFO, a socket, a broken link). Links to folders
    are followed, like ImageFolder does, but each folder is searched once (by device and inode),
    so a link loop (``ln -s . sub``) neither repeats images nor recurses without end. Returns the
    files sorted by path.
    """
    path = Path(path)
    if path.is_file():
        if not _is_image(path.name):
            raise DatasetError(f"{path} is not an image file ({_ACCEPTED}). Give an image file or a folder of them.")
        return [path]
    if not path.is_dir():
        what = "is not a regular file (a FIFO, socket or device)" if path.exists() else "does not exist"
        raise DatasetError(f"{path} {what}; give an image file or a folder of image files.")
    files = _image_files_under(path)
    if not files:
        raise DatasetError(f"folder {path} contains no image files ({_ACCEPTED}, searched recursively).")
    return sorted(files)


def _image_files_under(path: Path) -> list[Path]:
    """The regular image files under the folder ``path``, entering each folder (device, inode) once."""
    files, seen = [], set()
    for folder, subfolders, names in os.walk(path, followlinks=True):
        status = _stat(folder)
        identity = None if status is None else (status.st_dev, status.st_ino)
        if identity is None or identity in seen:
            subfolders[:] = []
            continue
        seen.add(identity)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        candidates = [Path(folder, name) for name in names if not name.startswith(".") and _is_image(name)]
        files += [file for file in candidates if (status := _stat(file)) is not None and stat.S_ISREG(status.st_mode)]
    return files


def _stat(path) -> os.stat_result | None:
    """``os.stat(path)`` (links followed), or None if it fails (e.g. a broken link)."""
    try:
        return os.stat(path)
    except OSError:
        return None


def read_images_for_prediction(path: Path | str, image_shape: tuple[int, int, int]) -> tuple[list[Path], np.ndarray]:
    """Read the images at ``path`` (see ``list_image_files``) for a model taking (H, W, C) = ``image_shape``.

    Returns (files, images) with images uint8 of shape (N, H, W, C), ``images[i]`` read from
    ``files[i]``. C must be 1 (grayscale, mode "L" files) or 3 (RGB; "RGBA", "P", ... files
    are converted to RGB as for training). Nothing is resized and grayscale/RGB are not
    converted into each other: every file of another shape is reported in one DatasetError.
    """
    expected = tuple(int(n) for n in image_shape)
    files = list_image_files(path)
    images = np.empty((len(files), *expected), dtype=np.uint8)
    mismatches = []
    progress = tqdm(files, desc="reading images", unit="img", disable=True if len(files) <= 1000 else None)
    for i, file in enumerate(progress):
        image, mode = _read_image_and_mode(str(file))
        if image.shape == expected:
            images[i] = image
        else:
            mismatches.append(f"{file} is {_describe(image.shape, mode)}")
    if mismatches:
        listed = "; ".join(mismatches[:_MAX_LISTED_MISMATCHES])
        others = len(mismatches) - _MAX_LISTED_MISMATCHES
        more = f"; and {others} other file(s)" if others > 0 else ""
        raise DatasetError(
            f"{len(mismatches)} of {len(files)} image(s) do not match the model input, "
            f"{_describe(expected)}: {listed}{more}. Resize/convert the images to {_describe(expected)} "
            "(nothing is resized or converted automatically)."
        )
    return files, images
