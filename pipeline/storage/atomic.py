"""Files written so that a reader (or a re-run) never sees half of one: a temporary name, then a rename."""

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, else removed.

    The temporary name, ``.<name>.<pid>.tmp``, is what :func:`remove_stale_temporaries` cleans up
    after a killed job. The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_npz_atomic(path, arrays):
    """``np.savez`` of a dict of arrays to ``path``, atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)


def write_text_atomic(path, text, encoding="utf-8"):
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding, newline="")


def remove_stale_temporaries(folder):
    """Delete temporary files that a killed job left in ``folder`` (recursively); returns their count."""
    stale = list(Path(folder).rglob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
