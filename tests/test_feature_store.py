"""Features on disk (pipeline/storage/feature_store.py): the store, its statistics, resumed and parallel fills."""

import numpy as np
import pytest

from pipeline.storage import FeatureStore
from pipeline.storage.feature_store import ArrayFeatures, RowSubset, standardized_columns, standardized_row_blocks
from planted_features import features


def stored(tmp_path, B, dtype="float32", block_rows=7, name="features.npy"):
    return FeatureStore(tmp_path / name).fill(np.asarray, B, dtype=dtype, block_rows=block_rows)


@pytest.mark.parametrize("n, block_rows", [(1, 7), (20, 7), (21, 7), (5, 100)])
def test_store_round_trip_and_statistics_for_any_block_size(tmp_path, n, block_rows):
    B, _ = features(n, 9)
    store = stored(tmp_path, B, block_rows=block_rows)
    assert store.complete and store.shape == (n, 9) and store.dtype == np.float32
    np.testing.assert_array_equal(np.load(store.path, mmap_mode="r"), B)
    np.testing.assert_array_equal(np.vstack([b for _, b in store.row_blocks(block_rows=3)]), B)
    np.testing.assert_array_equal(store.columns([8, 2]), B[:, [8, 2]].astype(np.float64))
    np.testing.assert_allclose(store.mean(), B.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(store.std(), B.astype(np.float64).std(axis=0), rtol=1e-9, atol=1e-12)


def test_float16_storage_holds_the_rounded_values_and_refuses_overflow(tmp_path):
    B, _ = features(30, 5)
    store = stored(tmp_path, B, dtype="float16")
    np.testing.assert_array_equal(np.load(store.path), B.astype(np.float16))
    np.testing.assert_allclose(store.mean(), B.astype(np.float16).astype(np.float64).mean(axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="overflow float16 .largest 65504.: store them as float32"):
        stored(tmp_path, B * 1e4, dtype="float16", name="big.npy")


def test_an_interrupted_fill_resumes_from_its_checkpoint(tmp_path):
    B, _ = features(40, 6)
    index = np.arange(len(B))
    calls = []

    def failing(rows):
        if rows[0] >= 24:
            raise KeyboardInterrupt  # the job is killed while computing rows 24-31
        calls.append(rows[0])
        return B[rows]

    store = FeatureStore(tmp_path / "features.npy")
    with pytest.raises(KeyboardInterrupt):
        store.fill(failing, index, block_rows=8, checkpoint_seconds=0)
    assert not store.complete
    resumed = []
    store.fill(lambda rows: resumed.append(rows[0]) or B[rows], index, block_rows=8)
    assert calls == [0, 8, 16] and resumed == [24, 32]
    np.testing.assert_array_equal(np.load(store.path), B)
    np.testing.assert_allclose(store.mean(), B.astype(np.float64).mean(axis=0), rtol=1e-12)


def test_blocks_computed_by_two_workers_are_identical(tmp_path):
    B, _ = features(50, 4)
    one = stored(tmp_path, B, name="one.npy")
    two = FeatureStore(tmp_path / "two.npy").fill(np.sqrt, B, block_rows=7, n_jobs=2)
    np.testing.assert_array_equal(np.load(two.path), np.sqrt(np.load(one.path)))


def interrupted_fill(tmp_path, B, stop_at):
    """A fill of ``B`` (rows as an index) killed before row ``stop_at``, checkpointed after every 8 rows."""
    def failing(rows):
        if rows[0] >= stop_at:
            raise KeyboardInterrupt
        return B[rows]

    store = FeatureStore(tmp_path / "features.npy")
    with pytest.raises(KeyboardInterrupt):
        store.fill(failing, np.arange(len(B)), block_rows=8, checkpoint_seconds=0)
    return store


def resumed(store, B):
    """Resume the fill; returns the first row it computed and what it logged."""
    computed, lines = [], []
    store.fill(lambda rows: computed.append(rows[0]) or B[rows], np.arange(len(B)), block_rows=8, log=lines.append)
    return computed[0] if computed else None, lines


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "old format"])
def test_a_damaged_checkpoint_is_detected_and_the_store_computed_again(tmp_path, damage):
    B, _ = features(40, 6)
    store = interrupted_fill(tmp_path, B, 24)
    saved = store.progress_path.read_bytes()
    store.progress_path.write_bytes({"truncated": saved[:len(saved) // 2], "garbage": b"\0" * len(saved),
                                     "empty": b""}.get(damage, b""))
    if damage == "old format":  # a checkpoint without block digests
        np.savez(store.progress_path, rows_done=np.int64(24), n_rows=np.int64(40), sums=np.zeros(6), sumsq=np.zeros(6))
    assert not store.complete and not store.verify()
    first, lines = resumed(store, B)
    assert first == 0 and any("checkpoint of an earlier fill is damaged" in line for line in lines)
    np.testing.assert_array_equal(np.load(store.path), B)
    np.testing.assert_allclose(store.mean(), B.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert store.verify()


def test_blocks_lost_or_changed_on_disk_are_computed_again_and_the_sums_follow(tmp_path):
    B, _ = features(40, 6)
    store = interrupted_fill(tmp_path, B, 32)
    np.lib.format.open_memmap(store.path, mode="r+")[12] = 0.0  # a block (rows 8-15) the disk never received
    first, lines = resumed(store, B)
    assert first == 8 and any("rows 8-16 do not hold what was written" in line for line in lines)
    np.testing.assert_array_equal(np.load(store.path), B)
    np.testing.assert_allclose(store.mean(), B.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(store.std(), B.astype(np.float64).std(axis=0), rtol=1e-9)


def test_a_truncated_feature_file_is_not_complete_and_is_computed_again(tmp_path):
    B, _ = features(40, 6)
    store = stored(tmp_path, B, block_rows=8)
    assert store.complete and store.verify()
    data = store.path.read_bytes()
    store.path.write_bytes(data[:-10])
    assert not store.complete
    assert resumed(store, B)[0] == 0
    np.testing.assert_array_equal(np.load(store.path), B)
    store.path.write_bytes(data[:-4] + b"\xff\xff\xff\xff")  # same size, last row changed
    assert store.complete and not store.verify()
    assert resumed(store, B)[0] == 32
    np.testing.assert_array_equal(np.load(store.path), B)


@pytest.mark.parametrize("source", ["float16 store", "float32 store", "float64 array", "row subset"])
def test_standardized_row_blocks_are_the_standardized_columns_block_by_block(tmp_path, source):
    B, _ = features(40, 9, seed=2)
    if source == "float64 array":
        data = ArrayFeatures(B.astype(np.float64) + 1e-9)  # below float32's resolution: must not be rounded
    else:
        data = stored(tmp_path, B, dtype=source.split()[0] if "store" in source else "float32", block_rows=7)
        data = RowSubset(data, np.arange(3, 40, 2)) if source == "row subset" else data
    mean, scale = np.linspace(-1, 1, 9), np.linspace(0.5, 2, 9)
    index = np.array([7, 1, 4])
    starts, blocks = zip(*standardized_row_blocks(data, index, mean, scale))
    assert all(block.dtype == np.float64 for block in blocks)
    assert list(starts) == list(np.cumsum([0] + [len(b) for b in blocks[:-1]]))
    np.testing.assert_array_equal(np.vstack(blocks), standardized_columns(data, index, mean, scale))
