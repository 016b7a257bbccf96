"""Feature matrices on disk: written block by block, resumable, read back in row blocks.

A :class:`FeatureStore` is an ``(N, F)`` matrix in a ``.npy`` file (float32 or float16; ``np.load(path,
mmap_mode="r")`` maps it) with its column sums and sums of squares (float64), accumulated in the same
pass that writes it, so standardisation needs no second pass. Blocks are written and read with plain
file I/O at their offsets, not through a memory map, so the resident memory of the process stays at a
block however large the file: the page cache, not the process, holds what fits.

Filling is resumable: after every block a checkpoint (rows done and the sums so far) is written
atomically next to the file; a killed fill continues from the last checkpoint, and the store is only
complete when the checkpoint says all rows are done.
"""

import time
from pathlib import Path

import numpy as np

from features.parallel import map_blocks

from .atomic import save_npz_atomic

DTYPES = ("float32", "float16")
_CHECKPOINT_SECONDS = 30.0


class FeatureStore:
    """An on-disk (N, F) feature matrix with column statistics.

    Use :meth:`fill` to compute it (or resume computing it) and :meth:`row_blocks`, :meth:`columns`,
    :meth:`mean` and :meth:`std` to read it.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.progress_path = self.path.with_name(self.path.name + ".progress.npz")

    # -- writing ---------------------------------------------------------------------------------

    def fill(self, function, X, dtype="float32", block_rows=256, n_jobs=1, scheduler=None, progress=None,
             checkpoint_seconds=_CHECKPOINT_SECONDS):
        """Store ``function(X[start:stop])`` for consecutive row blocks of ``X``, resuming an earlier fill.

        ``function`` maps (b, ...) rows to a (b, F) float array, row by row; blocks are computed by
        :func:`features.parallel.map_blocks` (``n_jobs`` local workers or a Dask ``scheduler``).
        ``progress(rows)`` is called with the number of rows finished so far (including resumed ones).
        A checkpoint is written after the first block that ends ``checkpoint_seconds`` after the
        previous one, and after the last. Returns self.
        """
        if dtype not in DTYPES:
            raise ValueError(f"feature dtype must be one of {DTYPES}, got {dtype!r}")
        n_rows = len(X)
        done, sums, sumsq = self._checkpoint(n_rows, dtype)
        last_checkpoint = time.monotonic()
        if progress is not None and done:
            progress(done)
        for start, block in map_blocks(function, X[done:], block_rows, n_jobs, scheduler):
            start += done
            stop = start + len(block)
            block = _stored(block, dtype)
            if sums is None:
                sums, sumsq = np.zeros(block.shape[1]), np.zeros(block.shape[1])
                np.lib.format.open_memmap(self.path, mode="w+", dtype=dtype, shape=(n_rows, block.shape[1]))
            self._write(start, block)
            wide = block.astype(np.float64)
            sums += wide.sum(axis=0)
            sumsq += np.einsum("ij,ij->j", wide, wide)
            if stop == n_rows or time.monotonic() - last_checkpoint >= checkpoint_seconds:
                save_npz_atomic(self.progress_path, {"rows_done": np.int64(stop), "n_rows": np.int64(n_rows),
                                                     "sums": sums, "sumsq": sumsq})
                last_checkpoint = time.monotonic()
            if progress is not None:
                progress(stop)
        return self

    def _checkpoint(self, n_rows, dtype):
        """(rows done, sums, sums of squares) of an earlier fill of this file, or (0, None, None)."""
        if not (self.progress_path.is_file() and self.path.is_file()):
            return 0, None, None
        with np.load(self.progress_path) as saved:
            if int(saved["n_rows"]) != n_rows or self.dtype != np.dtype(dtype):
                return 0, None, None
            return int(saved["rows_done"]), saved["sums"], saved["sumsq"]

    def _write(self, start, block):
        with open(self.path, "r+b") as handle:
            handle.seek(self._data_offset() + start * block.shape[1] * block.itemsize)
            handle.write(np.ascontiguousarray(block).tobytes())

    # -- reading ---------------------------------------------------------------------------------

    @property
    def complete(self):
        """True when every row has been written."""
        if not (self.progress_path.is_file() and self.path.is_file()):
            return False
        with np.load(self.progress_path) as saved:
            return int(saved["rows_done"]) == int(saved["n_rows"])

    @property
    def shape(self):
        """(N, F)."""
        return self._header()[0]

    @property
    def dtype(self):
        return self._header()[1]

    def __len__(self):
        return self.shape[0]

    def row_blocks(self, block_rows=None, dtype=np.float32):
        """Yield ``(start, block)`` with ``block`` the rows ``start:start + len(block)`` as ``dtype``.

        ``block_rows`` defaults to about 64 MiB of stored values per block.
        """
        n_rows, n_cols = self.shape
        itemsize = self.dtype.itemsize
        block_rows = block_rows or max(1, (64 << 20) // max(1, n_cols * itemsize))
        buffer = np.empty((min(block_rows, n_rows), n_cols), dtype=self.dtype)
        with open(self.path, "rb") as handle:
            handle.seek(self._data_offset())
            for start in range(0, n_rows, block_rows):
                rows = buffer[:min(block_rows, n_rows - start)]
                handle.readinto(memoryview(rows).cast("B"))
                yield start, rows.astype(dtype)

    def columns(self, index, dtype=np.float64):
        """The columns ``index`` of every row, (N, len(index)) ``dtype``, in one pass."""
        out = np.empty((self.shape[0], len(index)), dtype=dtype)
        for start, block in self.row_blocks():
            out[start:start + len(block)] = block[:, index]
        return out

    def mean(self):
        """(F,) float64 column means."""
        with np.load(self.progress_path) as saved:
            return saved["sums"] / self.shape[0]

    def std(self):
        """(F,) float64 column standard deviations (population, like ``np.std``)."""
        with np.load(self.progress_path) as saved:
            mean = saved["sums"] / self.shape[0]
            return np.sqrt(np.maximum(saved["sumsq"] / self.shape[0] - mean * mean, 0.0))

    def _header(self):
        """(shape, dtype, byte offset of the data) of the .npy file."""
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, dtype = read[version](handle)
            return shape, np.dtype(dtype), handle.tell()

    def _data_offset(self):
        return self._header()[2]


def _stored(block, dtype):
    """``block`` as the storage dtype; refuses values that float16 cannot hold."""
    block = np.asarray(block)
    if dtype == "float16" and np.abs(block).max(initial=0.0) > np.finfo(np.float16).max:
        raise ValueError(f"features up to {np.abs(block).max():.4g} overflow float16 (largest "
                         f"{np.finfo(np.float16).max:.0f}): store them as float32 or use mean pooling")
    return block.astype(dtype, copy=False)


class ArrayFeatures:
    """An in-memory (N, F) feature matrix behind :class:`FeatureStore`'s reading interface.

    Lets the output layer's working-set solve (:mod:`pipeline.readout.working_set`) run on features that fit in
    memory but whose float64 standardised copy (``8 N F`` bytes) or F x F Gram matrix would not: it reads
    ``array`` (float32 or float64, never copied whole) in row blocks like a store's file.
    """

    complete = True

    def __init__(self, array):
        self.array = array
        self.path = "<in memory>"
        self._mean = None

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return self.array.dtype

    def __len__(self):
        return self.shape[0]

    def row_blocks(self, block_rows=None, dtype=np.float32):
        """Yield ``(start, rows)`` of about 64 MiB of float64 values each, as ``dtype``."""
        block_rows = block_rows or max(1, (64 << 20) // max(1, 8 * self.shape[1]))
        for start in range(0, self.shape[0], block_rows):
            yield start, self.array[start:start + block_rows].astype(dtype)

    def columns(self, index, dtype=np.float64):
        """The columns ``index``, (N, len(index)) ``dtype``."""
        return self.array[:, index].astype(dtype)

    def mean(self):
        """(F,) float64 column means (computed once; do not modify the returned array)."""
        if self._mean is None:
            self._mean = np.mean(self.array, axis=0, dtype=np.float64)
        return self._mean

    def std(self):
        """(F,) float64 column standard deviations (population), in one pass over row blocks."""
        mean, total = self.mean(), np.zeros(self.shape[1])
        for _, block in self.row_blocks(dtype=np.float64):
            block -= mean
            total += np.einsum("ij,ij->j", block, block)
        return np.sqrt(total / self.shape[0])


def standardized_columns(features, index, mean, scale):
    """Columns ``index`` of ``features`` (a :class:`FeatureStore` or :class:`ArrayFeatures`), standardised
    with the per-feature ``mean`` and ``scale`` (F,): (N, len(index)) float64."""
    columns = features.columns(index)
    columns -= mean[index]
    columns /= scale[index]
    return columns


class RowSubset:
    """The rows ``rows`` of a :class:`FeatureStore` or :class:`ArrayFeatures`, behind the same reading interface.

    ``rows`` (sorted here, unique) index the underlying matrix; the subset's row ``i`` is its row
    ``rows[i]``. Reading passes over the underlying rows block by block and keeps the subset's, so the
    output layer can fit on some rows of a store and score on others without copying either.
    """

    complete = True

    def __init__(self, features, rows):
        self.features = features
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        self.path = features.path

    @property
    def shape(self):
        return (len(self.rows), self.features.shape[1])

    @property
    def dtype(self):
        return self.features.dtype

    def __len__(self):
        return len(self.rows)

    def row_blocks(self, block_rows=None, dtype=np.float32):
        """Yield ``(start, block)``: the subset's rows ``start:start + len(block)`` as ``dtype``."""
        for start, block in self.features.row_blocks(block_rows, dtype):
            lo, hi = np.searchsorted(self.rows, [start, start + len(block)])
            if hi > lo:
                yield int(lo), block[self.rows[lo:hi] - start]

    def columns(self, index, dtype=np.float64):
        """The columns ``index`` of the subset's rows, (len(rows), len(index)) ``dtype``, in one pass."""
        out = np.empty((len(self.rows), len(index)), dtype=dtype)
        for start, block in self.row_blocks():
            out[start:start + len(block)] = block[:, index]
        return out
