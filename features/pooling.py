"""ReLU and spatial pooling of a chunk's response maps (Algorithm 2, step 7, after the filter product).

The responses ``r`` (n, h, w, F) of a chunk of images, in the compute dtype, become ``n x F' x regions``
pooled features: ``max(r, 0)`` and, two-sided, ``max(c - r, 0)`` (the negated filters' responses from the
same product, formed in float32), summed, averaged or maximised over each region of the pooling grid and
accumulated in float32.

On the CPU this is one compiled pass (numba) that reads each response once and keeps its float32
accumulators in cache: on an AMX processor the bfloat16 GEMM writes its output about as fast as memory
takes it, so each further pass over the responses (an in-place ReLU, a separate negated side, a reduction)
costs about as much as the GEMM itself. bfloat16 values are widened by their bits (the upper half of a
float32). On other devices (CUDA) torch reductions, region by region.
"""

import threading

import numba
import numpy as np
import torch

# Filters per work item of the compiled pass: its float32 accumulators (sides x regions x block) stay in
# the core's cache, and a chunk still has several items per thread.
FILTER_BLOCK = 1024
# One compiled pass at a time per process: numba's workqueue threading layer (where neither OpenMP nor TBB
# is available) must not be entered by two threads at once (a threaded Dask worker, joblib threads).
_COMPILED_PASS_LOCK = threading.Lock()


def relu_pool(responses, rows, cols, pooling, negated_offset=None):
    """Rectified and pooled responses, filter-major, in float32.

    Parameters
    ----------
    responses : tensor (n, h, w, F), float32 or bfloat16, on any device
    rows, cols : int arrays, the grid's region edges along h and w (:func:`features.feature_map.region_edges`)
    pooling : "sum", "mean" or "max" over each region
    negated_offset : (F,) float array or None: also pool ``max(negated_offset - r, 0)``

    Returns
    -------
    float32 tensor (n, F' * regions) on the responses' device, ``F' = F`` (``2F`` with ``negated_offset``,
    the negated side second); feature ``f * regions + region`` is filter ``f`` over ``region`` (row-major).
    """
    negated = None if negated_offset is None else np.asarray(negated_offset, dtype=np.float32)
    if responses.device.type == "cpu":
        return _relu_pool_compiled(responses, rows, cols, pooling, negated)
    return _relu_pool_torch(responses, rows, cols, pooling, negated)


def _region_counts(rows, cols):
    """(regions,) positions in each region of the grid, row-major."""
    return np.outer(np.diff(rows), np.diff(cols)).ravel()


def _relu_pool_compiled(responses, rows, cols, pooling, negated):
    """:func:`relu_pool` on the CPU: the responses' memory handed to :func:`_relu_pool_kernel` as numpy."""
    n_images, _, _, n_filters = responses.shape
    bfloat16 = responses.dtype == torch.bfloat16
    values = responses.view(torch.int16).numpy().view(np.uint16) if bfloat16 else responses.numpy()
    sides = 1 if negated is None else 2
    counts = _region_counts(rows, cols)
    scale = 1.0 / counts if pooling == "mean" else np.ones(counts.size)
    out = np.empty((n_images, sides, n_filters, scale.size), dtype=np.float32)
    with _COMPILED_PASS_LOCK:
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        _relu_pool_kernel(values, bfloat16, np.repeat(np.arange(len(rows) - 1), np.diff(rows)),
                          np.repeat(np.arange(len(cols) - 1), np.diff(cols)), len(cols) - 1,
                          np.zeros(n_filters, np.float32) if negated is None else negated,
                          scale.astype(np.float32), sides, pooling == "max", FILTER_BLOCK, out)
    return torch.from_numpy(out.reshape(n_images, -1))


@numba.njit(parallel=True, cache=True)
def _relu_pool_kernel(responses, bfloat16_bits, row_band, col_band, n_cols, negated, scale, sides, maximum,
                      block, out):
    """Write into ``out`` (n, sides, F, regions) the pooled ``max(r, 0)`` (and ``max(negated - r, 0)``) of
    ``responses`` (n, h, w, F): float32, or uint16 bfloat16 bit patterns when ``bfloat16_bits``.

    ``row_band`` (h,) / ``col_band`` (w,) give each response row's / column's band, the region being
    ``row_band * n_cols + col_band``; each region's float32 accumulator is multiplied by ``scale`` (1, or
    one over its count for the mean). Work items are (image, block of filters) pairs, run in parallel.
    """
    n_images, height, width, n_filters = responses.shape
    n_blocks = (n_filters + block - 1) // block
    for item in numba.prange(n_images * n_blocks):
        image, first = item // n_blocks, (item % n_blocks) * block
        stop = min(n_filters, first + block)
        accumulators = np.zeros((sides, scale.size, stop - first), np.float32)
        values = np.empty(stop - first, np.float32)
        negated_values = np.empty(stop - first, np.float32)
        for y in range(height):
            for x in range(width):
                region = row_band[y] * n_cols + col_band[x]
                _load(responses[image, y, x, first:stop], bfloat16_bits, values)
                _accumulate(accumulators[0, region], values, maximum)
                if sides == 2:
                    for k in range(stop - first):
                        negated_values[k] = negated[first + k] - values[k]
                    _accumulate(accumulators[1, region], negated_values, maximum)
        for side in range(sides):
            for region in range(scale.size):
                for k in range(stop - first):
                    out[image, side, first + k, region] = accumulators[side, region, k] * scale[region]


@numba.njit(inline="always")
def _load(source, bfloat16_bits, values):
    """``values`` (float32) = ``source``: float32, or bfloat16 bit patterns (uint16) shifted into the upper
    half of a float32 (exact)."""
    if bfloat16_bits:
        bits = values.view(np.uint32)
        for k in range(values.size):
            bits[k] = np.uint32(source[k]) << 16
    else:
        for k in range(values.size):
            values[k] = source[k]


@numba.njit(inline="always")
def _accumulate(accumulator, values, maximum):
    """``accumulator`` = max(accumulator, values) if ``maximum``, else ``accumulator + max(values, 0)``."""
    if maximum:
        for k in range(values.size):
            accumulator[k] = max(accumulator[k], values[k])
    else:
        for k in range(values.size):
            accumulator[k] += max(values[k], np.float32(0.0))


def _relu_pool_torch(responses, rows, cols, pooling, negated):
    """:func:`relu_pool` by torch reductions, region by region (each region's responses widened to float32
    once)."""
    n_images, _, _, n_filters = responses.shape
    out = torch.empty((n_images, 1 if negated is None else 2, n_filters, _region_counts(rows, cols).size), dtype=torch.float32,
                      device=responses.device)
    if negated is not None:
        negated = torch.as_tensor(negated, device=responses.device)
    regions = [(r0, r1, c0, c1) for r0, r1 in zip(rows[:-1], rows[1:]) for c0, c1 in zip(cols[:-1], cols[1:])]
    for region, (r0, r1, c0, c1) in enumerate(regions):
        values = responses[:, r0:r1, c0:c1].float()
        sides_values = [values] if negated is None else [values, negated - values]
        for side, side_values in enumerate(sides_values):
            side_values = side_values.relu_()
            out[:, side, :, region] = side_values.amax(dim=(1, 2)) if pooling == "max" else side_values.sum(dim=(1, 2))
    if pooling == "mean":
        out /= torch.as_tensor(_region_counts(rows, cols), dtype=torch.float32, device=out.device)
    return out.flatten(1)
