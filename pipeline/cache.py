"""Stage artifacts on disk: content keys and atomic writes.

A stage's artifact is a ``.npz`` file of arrays named ``<stage>-<key>.npz``; the key hashes the
settings the stage depends on and the keys of the stages it reads, so changing a setting re-runs that
stage and the ones after it, and nothing before. Files are written under a temporary name and renamed,
so a killed job never leaves a half-written artifact that a later run would trust.
"""

import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from features.stages import Uncached


def stage_key(*parts):
    """A short hex digest of JSON-serialisable ``parts`` (settings and upstream keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


# Estimator parameters that change how a stage runs, not what it computes (tested to give identical results).
RESULT_NEUTRAL = frozenset({"n_jobs", "verbose", "batch_size", "scheduler"})


class CachedStages:
    """Stage runner (:mod:`features.stages`) that caches every stage in ``folder`` and times it.

    Stage ``n``'s key hashes its name, its settings (the estimator's parameters when it fits one) and
    the key of the stage it follows (``after``, default: the previous stage; the first follows
    ``root_key``, e.g. the data's key). Fitted estimators are saved as model files
    (:mod:`pipeline.model_io`) in ``<stage>-<key>/``, transformed arrays as ``<stage>-<key>.npz``; a damaged or
    half-written artifact is recomputed.

    Attributes
    ----------
    seconds : dict stage -> wall-clock seconds (loading counts as the stage's time)
    keys : dict stage -> key
    outputs : dict stage -> array, the results of the ``transform`` stages
    """

    def __init__(self, folder, root_key, log=print):
        self.cache = StageCache(folder)
        self.log = log
        self.keys = {}
        self.seconds = {}
        self.outputs = {}
        self._last = root_key

    def fit(self, name, estimator, X, y=None, settings=None, after=None):
        from .model_io import ModelFileError, load_model, save_model

        key = self._key(name, {**_settings(estimator), **(settings or {})}, after)
        folder = self.cache.folder / f"{name}-{key}"
        with self._timed(name):
            try:
                fitted = load_model(folder)
                self.log(f"[{name}] loaded from {folder}")
                return fitted
            except ModelFileError:
                fitted = Uncached().fit(name, estimator, X, y)
                save_model(fitted, folder)
                return fitted

    def transform(self, name, estimator, X, after=None):
        """``estimator.transform(X)``, cached; also kept in ``outputs[name]``."""
        key = self._key(name, _settings(estimator), after)
        with self._timed(name):
            arrays = self.cache.load(name, key)
            if arrays is not None:
                self.log(f"[{name}] loaded from {self.cache.path(name, key)}")
                value = arrays["array"]
            else:
                value = Uncached().transform(name, estimator, X)
                self.cache.save(name, key, {"array": value})
        self.outputs[name] = value
        return value

    def _key(self, name, settings, after):
        key = stage_key(self.keys[after] if after is not None else self._last, name, settings)
        self.keys[name] = self._last = key
        return key

    @contextmanager
    def _timed(self, name):
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        self.log(f"[{name}] done in {self.seconds[name]:.1f} s")


def _settings(estimator):
    """The estimator's result-relevant parameters (nested estimators are stages of their own)."""
    return {name: value for name, value in estimator.get_params(deep=False).items()
            if name not in RESULT_NEUTRAL and not hasattr(value, "get_params")}


def remove_stale_temporaries(folder):
    """Delete temporary files that a killed job left in ``folder`` (recursively); returns their count."""
    stale = list(Path(folder).rglob(".*.tmp")) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
