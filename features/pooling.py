"""ReLU and spatial pooling of a chunk's response maps (Algorithm 2, step 7, after the filter product).

The responses ``r`` (n, h, w, F) of a chunk of images, in the compute dtype, become ``n x F' x regions``
pooled features: ``max(r, 0)`` and, two-sided, ``max(c - r, 0)`` (the negated filters' responses from the
same product, formed in float32), summed, averaged or maximised over each region of the pooling grid and
accumulated in float32.

On the CPU this is one compiled pass (numba) that reads each response once and keeps its float32
accumulators in cache: on an AMX processor the bfloat16 GEMM writes its output about as fast as memory
takes it, so each further pass over the responses (an in-place ReLU, a separate negated side, a reduction)
costs about as much as the GEMM itself. Each work item reads its filters' responses one position (a
contiguous row slice) at a time, and bfloat16 values are widened by their bits (the upper half of a
float32) in registers, so that every inner loop is one vectorised loop. On other devices (CUDA) torch
reductions, region by region.
"""

import threading

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic, overload

# Filters per work item are capped so that its float32 accumulators (sides x regions x filters) stay in the
# core's L2 cache; a work item reads its filters' responses position by position, in contiguous rows.
ACCUMULATOR_BYTES = 2**20
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
    """:func:`relu_pool` on the CPU: the responses' memory handed to :func:`_relu_pool_kernel` as numpy
    (bfloat16 as its uint16 bit patterns)."""
    n_images, height, width, n_filters = responses.shape
    if responses.dtype == torch.bfloat16:
        values = responses.view(torch.int16).numpy().view(np.uint16)
    else:
        values = responses.numpy()
    sides = 1 if negated is None else 2
    counts = _region_counts(rows, cols)
    scale = 1.0 / counts if pooling == "mean" else np.ones(counts.size)
    region_of_position = (np.repeat(np.arange(len(rows) - 1), np.diff(rows))[:, None] * (len(cols) - 1)
                          + np.repeat(np.arange(len(cols) - 1), np.diff(cols))[None, :]).ravel()
    out = np.empty((n_images, sides, n_filters, scale.size), dtype=np.float32)
    with _COMPILED_PASS_LOCK:
        threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(threads)
        block = filter_block(n_images, n_filters, sides * scale.size, threads)
        _relu_pool_kernel(values.reshape(n_images, height * width, n_filters), region_of_position,
                          np.zeros(n_filters, np.float32) if negated is None else negated,
                          scale.astype(np.float32), sides == 2, pooling == "max", block, out)
    return torch.from_numpy(out.reshape(n_images, -1))


def filter_block(n_images, n_filters, accumulators_per_filter, threads):
    """Filters per work item of the compiled pass: as many as :data:`ACCUMULATOR_BYTES` of float32
    accumulators allow (``accumulators_per_filter`` = sides x regions each), fewer when there are not
    enough images to give every thread a work item."""
    most = max(1, ACCUMULATOR_BYTES // (4 * accumulators_per_filter))
    splits = max(-(-n_filters // most), -(-threads // n_images))
    return -(-n_filters // min(splits, n_filters))


@numba.njit(parallel=True, cache=True)
def _relu_pool_kernel(responses, region_of_position, negated, scale, two_sided, maximum, block, out):
    """Write into ``out`` (n, sides, F, regions) the pooled ``max(r, 0)`` (and ``max(negated - r, 0)``) of
    ``responses`` (n, positions, F): float32, or uint16 bfloat16 bit patterns.

    ``region_of_position`` (positions,) gives each position's region; each region's float32 accumulator is
    multiplied by ``scale`` (1, or one over its count for the mean). Work items are (image, block of
    filters) pairs, run in parallel; each reads its block's responses one position (a contiguous row
    slice) at a time.
    """
    n_images, n_positions, n_filters = responses.shape
    n_blocks = (n_filters + block - 1) // block
    for item in numba.prange(n_images * n_blocks):
        image, first = item // n_blocks, (item % n_blocks) * block
        stop = min(n_filters, first + block)
        accumulators = np.zeros((2 if two_sided else 1, scale.size, stop - first), np.float32)
        for position in range(n_positions):  # (one-sided: accumulators[-1] is accumulators[0], unused)
            region = region_of_position[position]
            _pool_row(responses[image, position, first:stop], negated[first:stop], accumulators[0, region],
                      accumulators[-1, region], two_sided, maximum)
        for side in range(accumulators.shape[0]):
            for region in range(scale.size):
                for k in range(stop - first):
                    out[image, side, first + k, region] = accumulators[side, region, k] * scale[region]


@numba.njit(inline="always")
def _pool_row(row, negated, positive, negative, two_sided, maximum):
    """Fold one position's responses ``row`` (F,) into the accumulators ``positive`` (and ``negative``, of
    ``negated - row``): their maximum with the values if ``maximum``, else their sums of the rectified
    values (max pooling of the rectified values too, the accumulators starting at 0). One loop per case,
    so that each is vectorised."""
    if maximum and two_sided:
        for k in range(row.size):
            value = as_float32(row[k])
            positive[k] = max(positive[k], value)
            negative[k] = max(negative[k], negated[k] - value)
    elif maximum:
        for k in range(row.size):
            positive[k] = max(positive[k], as_float32(row[k]))
    elif two_sided:
        for k in range(row.size):
            value = as_float32(row[k])
            positive[k] += max(value, np.float32(0.0))
            negative[k] += max(negated[k] - value, np.float32(0.0))
    else:
        for k in range(row.size):
            positive[k] += max(as_float32(row[k]), np.float32(0.0))


def as_float32(value):
    """A response as float32: float32 as is, a bfloat16 bit pattern (uint16) as the float32 whose upper
    half it is (exact). Compiled code only (see the overload below)."""
    raise NotImplementedError("as_float32 runs in compiled code only")


@overload(as_float32, inline="always")
def _as_float32_overload(value):
    if value == types.uint16:
        return lambda value: _bfloat16_bits_as_float32(value)
    return lambda value: np.float32(value)


@intrinsic
def _bfloat16_bits_as_float32(typingctx, bits):
    """The float32 whose bits are ``bits`` (uint16) shifted into the upper half: zero-extend, shift, bitcast
    (one vector instruction each, where a numpy view of a buffer would stop the loop's vectorisation)."""
    def codegen(context, builder, signature, args):
        wide = builder.zext(args[0], context.get_value_type(types.uint32))
        upper = builder.shl(wide, context.get_constant(types.uint32, 16))
        return builder.bitcast(upper, context.get_value_type(types.float32))
    return types.float32(types.uint16), codegen


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
