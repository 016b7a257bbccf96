"""Stage artifacts on disk: content keys and the cache folder.

A stage's artifact is a ``.npz`` file of arrays named ``<stage>-<key>.npz``; the key hashes the
stage's settings and a fingerprint of each of its inputs (:func:`array_fingerprint` of the data, or the
key of the stage that produced it; see :mod:`pipeline.cached_stages`), so changing a setting or the data
re-runs that stage and the ones after it, and nothing before. Files are written under a temporary name
and renamed, so a killed job never leaves a half-written artifact that a later run would trust; a
damaged one is deleted and recomputed.
"""

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np

from .atomic import save_npz_atomic


def stage_key(*parts):
    """A short hex digest of JSON-serialisable ``parts`` (settings and input fingerprints).

    Settings that are None are left out, so that a new setting whose default is None (off) keeps the
    keys, and the caches, of earlier runs.
    """
    text = json.dumps(_without_none(parts), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_none(value):
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(item) for item in value]
    return value


def array_fingerprint(array):
    """A short hex digest of an array's dtype, shape and bytes (its content, wherever it came from)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array.reshape(-1)).cast("B"))
    return digest.hexdigest()[:16]


class StageCache:
    """Artifacts of one job folder. ``folder`` is created on first write; ``log`` reports damaged files."""

    def __init__(self, folder, log=print):
        self.folder = Path(folder)
        self.log = log

    def path(self, stage, key):
        return self.folder / f"{stage}-{key}.npz"

    def load(self, stage, key):
        """The arrays saved for ``(stage, key)`` as a dict, or None if there are none."""
        path = self.path(stage, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            self.log(f"[{stage}] cached {path.name} is damaged ({type(error).__name__}: {error}); recomputing it")
            path.unlink(missing_ok=True)
            return None

    def save(self, stage, key, arrays):
        """Save a dict of arrays atomically; returns the path."""
        path = self.path(stage, key)
        save_npz_atomic(path, arrays)
        return path
