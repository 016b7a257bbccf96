"""The job's stage runner (pipeline/cached_stages.py): keys from inputs, reuse, recomputation."""

import numpy as np
from sklearn.preprocessing import StandardScaler

from pipeline.cached_stages import CachedStages


class CountingScaler(StandardScaler):
    """StandardScaler that counts its fits and transforms (class-level, so clones and loads share them)."""

    fits = transforms = 0

    def fit(self, X, y=None):
        CountingScaler.fits += 1
        return super().fit(X, y)

    def transform(self, X, copy=None):
        CountingScaler.transforms += 1
        return super().transform(X, copy)


def run(folder, X):
    """Fit and transform as one job would; returns the transformed array."""
    stages = CachedStages(folder, log=lambda line: None)
    scaler = stages.fit("scaler", CountingScaler(), X)
    return stages.transform("scaled", scaler, X), stages


def test_stages_are_reused_for_the_same_data_and_recomputed_when_the_data_change(tmp_path, monkeypatch):
    from pipeline import model_files

    monkeypatch.setitem(model_files.REGISTRY, "CountingScaler", CountingScaler)
    CountingScaler.fits = CountingScaler.transforms = 0
    X = np.random.default_rng(0).normal(size=(20, 3))
    first, _ = run(tmp_path, X)
    again, _ = run(tmp_path, X.copy())  # same content: loaded, nothing computed
    assert (CountingScaler.fits, CountingScaler.transforms) == (1, 1)
    np.testing.assert_array_equal(first, again)
    changed = X.copy()
    changed[3, 1] += 1.0  # one value of the data: both stages again, and the result follows the data
    result, _ = run(tmp_path, changed)
    assert (CountingScaler.fits, CountingScaler.transforms) == (2, 2)
    np.testing.assert_allclose(result, StandardScaler().fit_transform(changed))


def test_a_result_asked_for_again_in_one_run_is_the_same_object(tmp_path, monkeypatch):
    from pipeline import model_files

    monkeypatch.setitem(model_files.REGISTRY, "CountingScaler", CountingScaler)
    X = np.random.default_rng(1).normal(size=(10, 2))
    scaled, stages = run(tmp_path, X)
    scaler = stages.fit("scaler", CountingScaler(), X)
    assert stages.transform("scaled", scaler, X) is scaled


def test_an_in_memory_transform_reports_progress_without_a_terminal(tmp_path, monkeypatch):
    """The last block always logs done/total, rate and time left (and at least once a minute before it)."""
    from pipeline import model_files

    monkeypatch.setitem(model_files.REGISTRY, "CountingScaler", CountingScaler)
    lines = []
    stages = CachedStages(tmp_path, log=lines.append)
    X = np.random.default_rng(2).normal(size=(600, 2))  # three blocks of BLOCK_ROWS = 256
    scaler = stages.fit("scaler", CountingScaler(), X)
    np.testing.assert_allclose(stages.transform("scaled", scaler, X), StandardScaler().fit_transform(X))
    assert any(line.startswith("[scaled] 600/600 images,") and "min left" in line for line in lines)


def test_a_finished_feature_store_damaged_on_disk_is_computed_again_not_loaded(tmp_path, monkeypatch):
    from pipeline import model_files
    from pipeline.cached_stages import FeatureStorage

    monkeypatch.setitem(model_files.REGISTRY, "CountingScaler", CountingScaler)
    X = np.random.default_rng(3).normal(size=(300, 2))
    scaler = CountingScaler().fit(X)
    CachedStages(tmp_path, log=lambda line: None, storage=FeatureStorage(storage="disk")).transform("scaled", scaler, X)
    path, = tmp_path.glob("scaled-*.npy")
    np.lib.format.open_memmap(path, mode="r+")[299] = 7.0  # the last block changed after it was written
    lines = []
    stages = CachedStages(tmp_path, log=lines.append, storage=FeatureStorage(storage="disk"))
    store = stages.transform("scaled", scaler, X)
    assert not any("loaded from" in line for line in lines)
    assert any(line.startswith("[scaled] ") and "rows 256-300 do not hold what was written" in line for line in lines)
    np.testing.assert_array_equal(np.load(store.path), scaler.transform(X).astype(np.float32))
