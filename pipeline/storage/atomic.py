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
    with atomic_paths(path) as (temporary,):
        yield temporary


@contextmanager
def atomic_paths(*paths):
    """Yield a list of temporary paths beside ``paths``; on success each is renamed over its path, in the
    order given, else all are removed.

    Every file is complete before the first rename, so a failure while writing (an exception, a full
    disk) leaves all of ``paths`` as they were; only a kill between two renames can leave some replaced
    and others not, which is why files that belong together carry each other's checksums
    (:mod:`pipeline.storage.model_io`). An OSError while writing is raised naming the path it was for.
    """
    paths = [Path(path) for path in paths]
    temporaries = [path.with_name(f".{path.name}.{os.getpid()}.tmp") for path in paths]
    try:
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            yield temporaries
        except OSError as error:
            if error.errno is None:
                raise
            raise OSError(error.errno, error.strerror, _written(error, temporaries, paths)) from error
        for temporary, path in zip(temporaries, paths):
            os.replace(temporary, path)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def _written(error, temporaries, paths):
    """The path (as text) that ``error`` happened writing: its own, else the only one, else their folder."""
    for temporary, path in zip(temporaries, paths):
        if error.filename in (str(temporary), temporary):
            return str(path)
    return str(paths[0] if len(paths) == 1 else paths[0].parent)


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
