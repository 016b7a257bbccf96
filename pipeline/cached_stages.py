"""The stage runner of the training job: every stage cached, timed and resumable.

:class:`CachedStages` implements the stage-runner protocol of :mod:`features.stages`; the job passes it
to :meth:`pipeline.classifier.ConvexRFClassifier.fit`.
"""

import time
from contextlib import contextmanager

import numpy as np
from tqdm.auto import tqdm

from features.parallel import map_blocks
from features.stage_protocol import Uncached

from .storage.feature_store import FeatureStore
from .model_files import load_model, save_model
from .storage.model_io import ModelFileError
from .storage.stage_cache import StageCache, stage_key

# Images per block of a feature stage computed in parallel or stored on disk.
BLOCK_ROWS = 256

# Estimator parameters that change how a stage runs, not what it computes (tested to give identical results).
RESULT_NEUTRAL = frozenset({"n_jobs", "verbose", "batch_size", "scheduler"})


class CachedStages:
    """Stage runner (:mod:`features.stages`) that caches every stage in ``folder`` and times it.

    Stage ``n``'s key hashes its name, its settings (the estimator's parameters when it fits one) and
    the key of the stage it follows (``after``, default: the previous stage; the first follows
    ``root_key``, e.g. the data's key). Fitted estimators are saved as model files
    (:mod:`pipeline.model_io`) in ``<stage>-<key>/``, transformed arrays as ``<stage>-<key>.npz``; a damaged or
    half-written artifact is recomputed.

    ``storage`` ("memory" or "disk"), ``dtype`` ("float32" or "float16", disk only), ``n_jobs`` and
    ``scheduler`` (see :func:`features.parallel.map_blocks`) say how ``transform`` stages are computed
    and kept.

    Attributes
    ----------
    seconds : dict stage -> wall-clock seconds (loading counts as the stage's time)
    keys : dict stage -> key
    outputs : dict stage -> array, the results of the ``transform`` stages
    """

    def __init__(self, folder, root_key, log=print, storage="memory", dtype="float32", n_jobs=1,
                 scheduler=None):
        self.cache = StageCache(folder)
        self.log = log
        self.storage = {"storage": storage, "dtype": dtype}
        self.n_jobs, self.scheduler = n_jobs, scheduler
        self.keys = {}
        self.seconds = {}
        self.outputs = {}
        self._last = root_key

    def fit(self, name, estimator, X, y=None, settings=None, after=None):
        """``estimator`` fitted on ``(X, y)``, or loaded from the cache; ``settings`` add to its key."""
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
        """``estimator.transform(X)``, cached; also kept in ``outputs[name]``.

        With ``storage="disk"`` the result is a :class:`pipeline.feature_store.FeatureStore` of
        ``dtype`` in ``<stage>-<key>.npy``, computed block by block (and resumed after a kill).
        """
        key = self._key(name, {**_settings(estimator), **self.storage}, after)
        with self._timed(name):
            if self.storage["storage"] == "disk":
                value = self._to_store(name, key, estimator, X)
            else:
                value = self._in_memory(name, key, estimator, X)
        self.outputs[name] = value
        return value

    def _in_memory(self, name, key, estimator, X):
        arrays = self.cache.load(name, key)
        if arrays is not None:
            self.log(f"[{name}] loaded from {self.cache.path(name, key)}")
            return arrays["array"]
        if self.n_jobs == 1 and self.scheduler is None:
            value = Uncached().transform(name, estimator, X)
        else:
            value = np.concatenate([block for _, block in map_blocks(
                estimator.transform, X, BLOCK_ROWS, self.n_jobs, self.scheduler)])
        self.cache.save(name, key, {"array": value})
        return value

    def _to_store(self, name, key, estimator, X):
        store = FeatureStore(self.cache.folder / f"{name}-{key}.npy")
        if store.complete:
            self.log(f"[{name}] loaded from {store.path}")
            return store
        self.cache.folder.mkdir(parents=True, exist_ok=True)
        with tqdm(total=len(X), desc=name, unit="img", disable=None) as bar:
            report = _ProgressLog(name, len(X), self.log)

            def progress(rows):
                bar.update(rows - bar.n)
                report(rows)

            return store.fill(estimator.transform, X, dtype=self.storage["dtype"], block_rows=BLOCK_ROWS,
                              n_jobs=self.n_jobs, scheduler=self.scheduler, progress=progress)

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


class _ProgressLog:
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
