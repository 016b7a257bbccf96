"""The stage runner of the training job: every stage cached under a key of its inputs, timed and resumable.

:class:`CachedStages` implements the stage-runner protocol of :mod:`features.stage_protocol`; the job
passes it to :meth:`pipeline.ConvexRFClassifier.fit` and calls it for its own stages.

A stage's key hashes its name, the settings of its estimator (its parameters, less those that only
change how it runs) and a fingerprint of each input: the bytes of an input array, or the key of the
stage that produced it. So a stage is recomputed exactly when its estimator, its data or anything
upstream changed, in whatever order the stages run.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from features.parallel import map_blocks
from features.parameters import N_JOBS, SCHEDULER, StrOptions
from features.stage_protocol import Uncached

from .model_files import load_model, save_model
from .storage.feature_store import DTYPES, FeatureStore
from .storage.model_io import ModelFileError
from .storage.stage_cache import StageCache, array_fingerprint, stage_key

# Images per block of a feature stage computed in parallel or stored on disk.
BLOCK_ROWS = 256

# Estimator parameters that change how a stage runs, not what it computes (tested to give identical results).
RESULT_NEUTRAL = frozenset({"n_jobs", "verbose", "batch_size", "scheduler"})


@dataclass(frozen=True)
class FeatureStorage:
    """How ``transform`` stages are computed and kept (the config's ``features.storage``, ``dtype``, ...).

    Attributes
    ----------
    storage : "memory" (arrays in ``<stage>-<key>.npz``) or "disk" (a :class:`pipeline.storage.FeatureStore`
        in ``<stage>-<key>.npy``, filled block by block, resumable, streamed by the output layer)
    dtype : "float32" or "float16", the stored dtype of features on disk
    n_jobs, scheduler : compute blocks of ``BLOCK_ROWS`` images with joblib workers or on a Dask cluster
        (:func:`features.parallel.map_blocks`; identical results)
    """

    storage: str = "memory"
    dtype: str = "float32"
    n_jobs: int = 1
    scheduler: str | None = None

    _parameter_constraints: ClassVar[dict] = {"storage": [StrOptions({"memory", "disk"})],
                                              "dtype": [StrOptions(set(DTYPES))], "n_jobs": N_JOBS,
                                              "scheduler": SCHEDULER}


class CachedStages:
    """Stage runner (:mod:`features.stage_protocol`) that caches every stage in ``folder`` and times it.

    Fitted estimators are saved as model files in ``<stage>-<key>/``, transformed arrays as
    ``<stage>-<key>.npz`` (or a feature store, see :class:`FeatureStorage`); a damaged or half-written
    artifact is recomputed. Within one run, a stage asked for again with the same key returns the
    same object.

    Attributes
    ----------
    seconds : dict stage -> wall-clock seconds (loading counts as the stage's time)
    keys : dict stage -> key of its latest call
    """

    def __init__(self, folder, log=print, storage=FeatureStorage()):
        self.cache = StageCache(folder, log)
        self.log = log
        self.storage = storage
        self.keys = {}
        self.seconds = {}
        self._results = {}  # key -> result, so that results fingerprint as the key that made them

    def fit(self, name, estimator, X, y=None, **fit_params):
        """``estimator`` fitted on ``(X, y)`` and ``fit_params`` (e.g. ``groups``), or loaded from the cache."""
        key = self._key(name, estimator, X, y, fit_params)
        if key in self._results:
            return self._results[key]
        folder = self.cache.folder / f"{name}-{key}"
        with self.timed(name):
            try:
                fitted = load_model(folder)
                self.log(f"[{name}] loaded from {folder}")
            except ModelFileError:
                fitted = Uncached().fit(name, estimator, X, y, **fit_params)
                save_model(fitted, folder)
        return self._keep(key, fitted)

    def transform(self, name, estimator, X):
        """``estimator.transform(X)``: an array, or a :class:`pipeline.storage.FeatureStore` with
        ``storage="disk"`` (resumed after a kill); computed in blocks of ``BLOCK_ROWS`` rows either way,
        with a progress line at least once a minute (:class:`ProgressLog`, for logs without a terminal)."""
        key = self._key(name, estimator, X, None, **vars(self.storage))
        if key in self._results:
            return self._results[key]
        with self.timed(name):
            compute = self._to_store if self.storage.storage == "disk" else self._in_memory
            value = compute(name, key, estimator, X)
        return self._keep(key, value)

    @contextmanager
    def timed(self, name):
        """Time the block as stage ``name`` (added to ``seconds[name]``) and log when it is done."""
        start = time.perf_counter()
        yield
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)
        self.log(f"[{name}] done in {self.seconds[name]:.1f} s")

    def _in_memory(self, name, key, estimator, X):
        arrays = self.cache.load(name, key)
        if arrays is not None:
            self.log(f"[{name}] loaded from {self.cache.path(name, key)}")
            return arrays["array"]
        value, report = None, ProgressLog(name, len(X), self.log)
        for start, block in map_blocks(estimator.transform, X, BLOCK_ROWS, self.storage.n_jobs,
                                       self.storage.scheduler):
            if value is None:
                value = np.empty((len(X), *block.shape[1:]), dtype=block.dtype)
            value[start:start + len(block)] = block
            report(start + len(block))
        self.cache.save(name, key, {"array": value})
        return value

    def _to_store(self, name, key, estimator, X):
        store = FeatureStore(self.cache.folder / f"{name}-{key}.npy")
        if store.complete and store.verify():  # one read pass: a crash may have lost written blocks
            self.log(f"[{name}] loaded from {store.path}")
            return store
        self.cache.folder.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(X), desc=name, unit="img", disable=None) as bar:
            report = ProgressLog(name, len(X), self.log)

            def progress(rows):
                bar.update(rows - bar.n)
                report(rows)

            return store.fill(estimator.transform, X, dtype=self.storage.dtype, block_rows=BLOCK_ROWS,
                              n_jobs=self.storage.n_jobs, scheduler=self.storage.scheduler, progress=progress,
                              log=lambda line: self.log(f"[{name}] {line}"))

    def _key(self, name, estimator, X, y, fit_params=None, **settings):
        """The stage's key: its name, ``settings`` and the fingerprints of its inputs (``fit_params`` that
        are None are left out, so a fit without them keeps its earlier key)."""
        inputs = [self._fingerprint(value) for value in (estimator, X, y) if value is not None]
        extra = {param: self._fingerprint(value) for param, value in (fit_params or {}).items() if value is not None}
        if extra:
            inputs.append(extra)
        self.keys[name] = stage_key(name, settings, inputs)
        return self.keys[name]

    def _fingerprint(self, value):
        """What determines ``value``: the key of the stage that produced it; for an estimator its settings
        and fitted state; for an array the digest of its bytes; a plain value stands for itself."""
        for key, result in self._results.items():
            if result is value:
                return key
        if hasattr(value, "get_params"):
            fitted = {name: self._fingerprint(item) for name, item in sorted(vars(value).items())
                      if name.endswith("_") and not name.startswith("_")}
            return stage_key(type(value).__name__, _settings(value), fitted)
        if isinstance(value, np.ndarray):
            return array_fingerprint(value)
        return value

    def _keep(self, key, value):
        self._results[key] = value
        return value


class ProgressLog:
    """Logs ``[stage] done/total images, rate, time left`` at most once a minute (for log files)."""

    def __init__(self, name, total, log, every_seconds=60.0):
        self.name, self.total, self.log, self.every = name, total, log, every_seconds
        self.start = self.last = time.monotonic()
        self.first_rows = None

    def __call__(self, rows):
        now = time.monotonic()
        if self.first_rows is None:
            self.first_rows = rows  # resumed rows do not count towards the rate
        if now - self.last < self.every and rows < self.total:
            return
        self.last = now
        rate = (rows - self.first_rows) / max(now - self.start, 1e-9)
        left = (self.total - rows) / rate / 60 if rate > 0 else float("nan")
        self.log(f"[{self.name}] {rows}/{self.total} images, {rate:.1f} images/s, {left:.1f} min left")


def _settings(estimator):
    """The estimator's result-relevant parameters (nested estimators are stages of their own)."""
    return {name: value for name, value in estimator.get_params(deep=False).items()
            if name not in RESULT_NEUTRAL and not hasattr(value, "get_params")}
