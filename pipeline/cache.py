"""Stage artifacts on disk: content keys and atomic writes.

A stage's artifact is a ``.npz`` file of arrays named ``<stage>-<key>.npz``; the key hashes the
settings the stage depends on and the keys of the stages it reads, so changing a setting re-runs that
stage and the ones after it, and nothing before. Files are written under a temporary name and renamed,
so a killed job never leaves a half-written artifact that a later run would trust.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np



def stage_key(*parts):
    """A short hex digest of JSON-serialisable ``parts`` (settings and upstream keys).

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


class StageCache:
    """Artifacts of one job folder. ``folder`` is created on first write."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def path(self, stage, key):
        return self.folder / f"{stage}-{key}.npz"

    def load(self, stage, key):
        """The arrays saved for ``(stage, key)`` as a dict, or None if there are none."""
        path = self.path(stage, key)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}

    def save(self, stage, key, arrays):
        """Save a dict of arrays atomically; returns the path."""
        path = self.path(stage, key)
        save_npz_atomic(path, arrays)
        return path


def save_npz_atomic(path, arrays):
    """``np.savez`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporaries(folder):
    """Delete temporary files that a killed job left in ``folder`` (recursively); returns their count."""
    stale = list(Path(folder).rglob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
