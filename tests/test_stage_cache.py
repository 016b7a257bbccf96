"""Stage keys and the cache folder (pipeline/storage/stage_cache.py)."""

import numpy as np

from pipeline.storage import StageCache, stage_key
from pipeline.storage.stage_cache import array_fingerprint


def test_settings_that_are_none_do_not_change_stage_keys():
    assert stage_key({"a": 1, "new": None}, "x") == stage_key({"a": 1}, "x")
    assert stage_key({"a": 1, "new": 2}, "x") != stage_key({"a": 1}, "x")


def test_array_fingerprints_see_content_dtype_and_shape():
    a = np.arange(12, dtype=np.float32)
    assert array_fingerprint(a) == array_fingerprint(a.copy())
    assert array_fingerprint(a) != array_fingerprint(a.reshape(3, 4))
    assert array_fingerprint(a) != array_fingerprint(a.astype(np.float64))
    b = a.copy()
    b[5] += 1
    assert array_fingerprint(a) != array_fingerprint(b)
    assert array_fingerprint(a[::2]) == array_fingerprint(np.ascontiguousarray(a[::2]))


def test_a_damaged_artifact_is_deleted_and_reported_not_raised(tmp_path):
    lines = []
    cache = StageCache(tmp_path, log=lines.append)
    path = cache.save("features", "k", {"array": np.ones(100)})
    path.write_bytes(path.read_bytes()[:50])  # truncated, as by a full disk
    assert cache.load("features", "k") is None
    assert not path.exists() and "damaged" in lines[0]
