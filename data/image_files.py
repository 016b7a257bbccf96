"""Images a user wants classified: list them, read them at the model's input shape, write predictions."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from torchvision.datasets.folder import IMG_EXTENSIONS
from tqdm import tqdm

from .core import DatasetError
from .image_folder import _describe, _read_image

IMAGE_SUFFIXES: tuple[str, ...] = tuple(suffix.lower() for suffix in IMG_EXTENSIONS)
_ACCEPTED = f"accepted suffixes (any case): {' '.join(IMAGE_SUFFIXES)}"
_MAX_LISTED_MISMATCHES = 5


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def list_image_files(path: Path | str) -> list[Path]:
    """The image files at ``path``: the file itself, or every image file under the folder.

    A folder is searched recursively (so an ImageFolder tree ``path/<class>/<image>`` works),
    skipping hidden files and folders (name starting with ".") and files without an image
    suffix. Returns the files sorted by path.
    """
    path = Path(path)
    if path.is_file():
        if not _is_image(path.name):
            raise DatasetError(f"{path} is not an image file ({_ACCEPTED}). Give an image file or a folder of them.")
        return [path]
    if not path.is_dir():
        raise DatasetError(f"{path} does not exist; give an image file or a folder of image files.")
    files = []
    for folder, subfolders, names in os.walk(path, followlinks=True):  # follows links like ImageFolder
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        files += [Path(folder, name) for name in names if not name.startswith(".") and _is_image(name)]
    if not files:
        raise DatasetError(f"folder {path} contains no image files ({_ACCEPTED}, searched recursively).")
    return sorted(files)


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
        image = _read_image(str(file))
        if image.shape == expected:
            images[i] = image
        else:
            mismatches.append(f"{file} is {_describe(image.shape)}")
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


def write_predictions_csv(path: Path | str, files: list[Path], classes, scores) -> None:
    """Write ``file,predicted_class,score`` rows to the CSV ``path`` atomically.

    ``files`` (N paths), ``classes`` (N,) predicted class names and ``scores`` (N,) floats,
    written with 6 significant digits. The file is written to a temporary file in the same
    folder and renamed over ``path``, so a reader never sees a partial file.
    """
    if not len(files) == len(classes) == len(scores):
        raise ValueError(f"files, classes and scores differ in length: {len(files)}, {len(classes)}, {len(scores)}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "predicted_class", "score"])
    writer.writerows([str(f), str(c), f"{float(s):.6g}"] for f, c, s in zip(files, classes, scores))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(buffer.getvalue(), encoding="utf-8", newline="")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
