"""Feature matrices on disk: written block by block, resumable, read back in row blocks.

A :class:`FeatureStore` is an ``(N, F)`` matrix in a ``.npy`` file (float32 or float16; ``np.load(path,
mmap_mode="r")`` maps it) with its column sums and sums of squares (float64), accumulated in the same
pass that writes it, so standardisation needs no second pass. Blocks are written and read with plain
file I/O at their offsets, not through a memory map, so the resident memory of the process stays at a
block however large the file: the page cache, not the process, holds what fits.

Filling is resumable: a checkpoint (rows done, the sums so far, and the end row and SHA-256 of every
block written) is written atomically next to the file; a killed fill continues from the last checkpoint,
and the store is only complete when the checkpoint says all rows are done. A crash can still damage
the files (a truncated or unreadable checkpoint, blocks the disk never received), so nothing in a
checkpoint is trusted unread: :meth:`FeatureStore.fill` (and :meth:`FeatureStore.verify`) re-read the
blocks it lists, keep those whose digests match, recompute the sums from them, and compute the rest
again. A store that cannot be verified is recomputed from its first row, never read as it is.
"""

import hashlib
import time
import zipfile
from pathlib import Path

import numpy as np

from features.parallel import map_blocks

from .atomic import save_npz_atomic

DTYPES = ("float32", "float16")
_CHECKPOINT_SECONDS = 30.0
_CHECKPOINT_ENTRIES = ("rows_done", "n_rows", "sums", "sumsq", "block_stops", "block_digests")


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
             checkpoint_seconds=_CHECKPOINT_SECONDS, log=None):
        """Store ``function(X[start:stop])`` for consecutive row blocks of ``X``, resuming an earlier fill.

        ``function`` maps (b, ...) rows to a (b, F) float array, row by row; blocks are computed by
        :func:`features.parallel.map_blocks` (``n_jobs`` local workers or a Dask ``scheduler``).
        ``progress(rows)`` is called with the number of rows finished so far (including resumed ones).
        A checkpoint is written after the first block that ends ``checkpoint_seconds`` after the
        previous one, and after the last. An earlier fill is resumed after its last verified block
        (:meth:`verify`); ``log(line)`` says what was damaged. Returns self.
        """
        if dtype not in DTYPES:
            raise ValueError(f"feature dtype must be one of {DTYPES}, got {dtype!r}")
        n_rows = len(X)
        stops, digests, sums, sumsq = self._verified(n_rows, dtype, log)
        done = stops[-1] if stops else 0
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
            stops.append(stop)
            digests.append(self._write(start, block))
            _accumulate(sums, sumsq, block)
            if stop == n_rows or time.monotonic() - last_checkpoint >= checkpoint_seconds:
                save_npz_atomic(self.progress_path, {
                    "rows_done": np.int64(stop), "n_rows": np.int64(n_rows), "sums": sums, "sumsq": sumsq,
                    "block_stops": np.array(stops, dtype=np.int64),
                    "block_digests": np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 32)})
                last_checkpoint = time.monotonic()
            if progress is not None:
                progress(stop)
        return self

    def verify(self, log=None):
        """Whether the store is complete and every block holds the bytes that were written (one read pass)."""
        checkpoint = self._checkpoint(log)
        if checkpoint is None:
            return False
        n_rows = int(checkpoint["n_rows"])
        stops = self._verified(n_rows, self.dtype, log, checkpoint)[0]
        return bool(stops) and stops[-1] == n_rows

    def _verified(self, n_rows, dtype, log, checkpoint=None):
        """``(block stops, block digests, sums, sums of squares)`` of the blocks of an earlier fill of
        ``n_rows`` rows of ``dtype`` whose bytes match their digests, up to the first that does not;
        ``([], [], None, None)`` when there is nothing to resume (the file is then written anew)."""
        checkpoint = self._checkpoint(log) if checkpoint is None else checkpoint
        if checkpoint is None or int(checkpoint["n_rows"]) != n_rows or self.dtype != np.dtype(dtype):
            return [], [], None, None
        n_cols = self.shape[1]
        stops, digests, sums, sumsq = [], [], np.zeros(n_cols), np.zeros(n_cols)
        start = 0
        for stop, digest in zip(checkpoint["block_stops"].tolist(), checkpoint["block_digests"]):
            data = self._read(start, stop)
            if hashlib.sha256(data).digest() != digest.tobytes():
                _report(log, f"{self.path.name}: rows {start}-{stop} do not hold what was written (lost or "
                        "changed on disk); computing them again")
                break
            stops.append(stop)
            digests.append(digest.tobytes())
            _accumulate(sums, sumsq, np.frombuffer(data, dtype=self.dtype).reshape(-1, n_cols))
            start = stop
        return (stops, digests, sums, sumsq) if stops else ([], [], None, None)

    def _checkpoint(self, log):
        """The checkpoint's arrays once they fit the ``.npy`` file (header, size), or None."""
        if not (self.progress_path.is_file() and self.path.is_file()):
            return None
        try:
            with np.load(self.progress_path, allow_pickle=False) as saved:
                checkpoint = {name: saved[name] for name in _CHECKPOINT_ENTRIES}
            (n_rows, n_cols), dtype, offset = self._header()
            stops = checkpoint["block_stops"]
            fits = (int(checkpoint["n_rows"]) == n_rows and checkpoint["block_digests"].shape == (len(stops), 32)
                    and 0 < len(stops) and 0 < stops[0] and np.all(np.diff(stops) > 0)
                    and int(checkpoint["rows_done"]) == stops[-1] <= n_rows
                    and self.path.stat().st_size == offset + n_rows * n_cols * dtype.itemsize)
            problem = None if fits else "it does not fit the feature file"
        except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is not None:
            _report(log, f"{self.path.name}: the checkpoint of an earlier fill is damaged ({problem}): a fill "
                    "interrupted while writing, or a damaged disk; computing the features again from the first row")
            return None
        return checkpoint

    def _write(self, start, block):
        """Write ``block`` (b, F) of the storage dtype at row ``start``; returns the SHA-256 of its bytes."""
        data = np.ascontiguousarray(block).tobytes()
        with open(self.path, "r+b") as handle:
            handle.seek(self._data_offset() + start * block.shape[1] * block.itemsize)
            handle.write(data)
        return hashlib.sha256(data).digest()

    def _read(self, start, stop):
        """The stored bytes of rows ``start:stop`` (fewer if the file ends first)."""
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as handle:
            handle.seek(self._data_offset() + start * row_bytes)
            return handle.read((stop - start) * row_bytes)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def complete(self):
        """True when the checkpoint says every row has been written and fits the file (header and size;
        the blocks' bytes are checked by :meth:`verify`)."""
        checkpoint = self._checkpoint(log=None)
        return checkpoint is not None and int(checkpoint["rows_done"]) == int(checkpoint["n_rows"])

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


def _accumulate(sums, sumsq, block):
    """Add the column sums and sums of squares (F,) float64 of ``block`` (b, F) in place."""
    wide = block.astype(np.float64)
    sums += wide.sum(axis=0)
    sumsq += np.einsum("ij,ij->j", wide, wide)


def _report(log, line):
    if log is not None:
        log(line)


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


def standardized_row_blocks(features, index, mean, scale):
    """Yield ``(start, block)``: the columns ``index`` of the rows ``start:start + len(block)`` of ``features``,
    standardised like :func:`standardized_columns`, (b, len(index)) float64, one row block at a time (a
    pass over the rows that never holds the (N, len(index)) columns)."""
    index = np.asarray(index)
    mean, scale = mean[index], scale[index]
    # read in the stored precision (float16 widened exactly), float64 only for the columns kept
    for start, block in features.row_blocks(dtype=np.result_type(features.dtype, np.float32)):
        columns = block[:, index].astype(np.float64)
        columns -= mean
        columns /= scale
        yield start, columns


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
