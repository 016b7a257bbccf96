"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision, driven by one table of specs.

The expected files are checked here before torchvision is called, so a missing or
truncated download is reported as one DatasetError naming the exact paths.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .core import DatasetError, ImageDataset


def _idx_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete uint8 IDX file (dimension count from its ``idxN`` name), or None."""
    ndim = int(re.search(r"idx(\d)", path.name).group(1))
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim or header[:4] != bytes((0, 0, 0x08, ndim)):
        return f"not a uint8 IDX file with {ndim} dimension(s) (bad or missing header)"
    dims = struct.unpack(f">{ndim}I", header[4:])
    expected = len(header) + int(np.prod(dims))
    size = path.stat().st_size
    if size != expected:
        return f"{size} bytes, but its header {dims} needs {expected} (truncated or corrupt download)"
    return None


@dataclass(frozen=True)
class _Spec:
    """How one torchvision dataset lies on disk under ``root``."""

    tv_class: str  # attribute of torchvision.datasets
    title: str  # name used in messages
    folder: str  # directory under root that holds ``files``
    files: tuple[str, ...]
    problem: Callable[[Path], str | None] | None = None  # content check for each present file

    def top(self) -> str:
        """The directory directly under root that the user must provide."""
        return self.folder.split("/")[0]


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

SPECS = {
    "mnist": _Spec("MNIST", "MNIST", "MNIST/raw", _MNIST_FILES, _idx_problem),
    "fashion_mnist": _Spec("FashionMNIST", "Fashion-MNIST", "FashionMNIST/raw", _MNIST_FILES, _idx_problem),
    "cifar10": _Spec(
        "CIFAR10",
        "CIFAR-10",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
    ),
}


def load_torchvision(name: str, root: Path, download: bool) -> tuple[ImageDataset, ImageDataset]:
    """Load the (train, test) splits of ``SPECS[name]`` from ``root``.

    Images come from torchvision's ``.data`` as uint8 (N, H, W, C): (N, 28, 28, 1) for
    the MNIST family, (N, 32, 32, 3) for CIFAR-10. Labels are int64, classes are the
    dataset's ``.classes``.
    """
    spec = SPECS[name]
    if not download:
        _check_files(spec, root)
    from torchvision import datasets

    tv_class = getattr(datasets, spec.tv_class)
    try:
        splits = [tv_class(str(root), train=train, download=download) for train in (True, False)]
    except Exception as err:  # torchvision reports bad data with assorted exception types
        raise DatasetError(
            f"{spec.title} under {root / spec.top()} could not be loaded: "
            f"{type(err).__name__}: {err}. {_fix(spec)}"
        ) from err
    return tuple(_to_dataset(split) for split in splits)


def _check_files(spec: _Spec, root: Path) -> None:
    """Raise one DatasetError if any expected file of ``spec`` is missing or damaged."""
    paths = [root / spec.folder / f for f in spec.files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        which = "none of them exist" if len(missing) == len(paths) else f"missing {', '.join(missing)}"
        raise DatasetError(
            f"{spec.title} not found under {root}: expected {', '.join(map(str, paths))} ({which}). "
            + _fix(spec)
        )
    damaged = [f"{p} is {why}" for p in paths if spec.problem and (why := spec.problem(p))]
    if damaged:
        raise DatasetError(
            f"{spec.title} files are damaged: {'; '.join(damaged)}. Remove the damaged file(s). " + _fix(spec)
        )


def _fix(spec: _Spec) -> str:
    return (
        f"Pass --data-root pointing at the folder that contains {spec.top()}/, "
        "or set data.download: true to fetch it."
    )


def _to_dataset(split) -> ImageDataset:
    """Convert a torchvision split's ``.data`` / ``.targets`` without per-item transforms."""
    images = np.ascontiguousarray(np.asarray(split.data), dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray(split.targets, dtype=np.int64)
    return ImageDataset(images, labels, tuple(split.classes))
